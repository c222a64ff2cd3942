import { useEffect, useId, useState } from "react";
import { Camera } from "./Camera";

export interface PickedImage {
  blob: Blob;
  filename: string;
  url: string;
}

/** Wrap a blob as a picked image with an object URL for previews. */
export function pickImage(blob: Blob, filename: string): PickedImage {
  return { blob, filename, url: URL.createObjectURL(blob) };
}

/** Revoke the previous preview URL whenever the picked image changes or goes away. */
export function useRevokeOnChange(image: PickedImage | undefined): void {
  useEffect(() => {
    if (!image) return undefined;
    return () => URL.revokeObjectURL(image.url);
  }, [image]);
}

interface ImagePickerProps {
  onPick: (image: PickedImage) => void;
  /** Offer the camera as well as a file upload. */
  camera?: boolean;
  /** Name of the image currently chosen, shown beside the controls. */
  selected?: string;
}

/** Choose an image by file upload or, optionally, by capturing a camera frame. */
export function ImagePicker({ onPick, camera = true, selected }: ImagePickerProps) {
  const [mode, setMode] = useState<"upload" | "camera">("upload");
  const inputId = useId();
  return (
    <div className="picker">
      {camera ? (
        <div className="segmented" role="radiogroup" aria-label="Image source">
          {(["upload", "camera"] as const).map((m) => (
            <label key={m} className={mode === m ? "active" : undefined}>
              <input
                type="radio"
                name={`${inputId}-mode`}
                value={m}
                checked={mode === m}
                onChange={() => setMode(m)}
                data-testid={`source-${m}`}
              />
              {m === "upload" ? "Upload" : "Camera"}
            </label>
          ))}
        </div>
      ) : null}
      {mode === "upload" ? (
        <div className="upload">
          <label htmlFor={inputId}>Image file (JPEG, PNG or WebP)</label>
          <input
            id={inputId}
            type="file"
            accept="image/jpeg,image/png,image/webp"
            data-testid="file-input"
            onChange={(e) => {
              const file = e.currentTarget.files?.[0];
              if (file) onPick(pickImage(file, file.name));
              e.currentTarget.value = "";
            }}
          />
        </div>
      ) : (
        <Camera onCapture={(jpeg) => onPick(pickImage(jpeg, "camera.jpg"))} />
      )}
      {selected ? (
        <p className="muted small" data-testid="picked">
          Chosen: {selected}
        </p>
      ) : null}
    </div>
  );
}
