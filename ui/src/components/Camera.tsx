import { useEffect, useRef, useState } from "react";

/** A getUserMedia failure in words: no camera, permission denied, camera busy. */
export function cameraError(e: unknown): string {
  if (e instanceof DOMException) {
    if (e.name === "NotAllowedError") return "Camera permission was denied.";
    if (e.name === "NotFoundError") return "No camera found.";
    if (e.name === "NotReadableError") return "The camera is in use by another program.";
  }
  return `Cannot start the camera: ${(e as Error).message ?? String(e)}`;
}

/** Whether this page may ask for the camera (getUserMedia needs HTTPS or localhost). */
export const cameraSupported = (): boolean =>
  typeof navigator !== "undefined" && typeof navigator.mediaDevices?.getUserMedia === "function";

/** What the page says when the browser gives no camera access here. */
export const NO_CAMERA_ACCESS = "This browser gives no camera access here: the camera needs HTTPS or localhost.";

/**
 * A live camera preview with a button that captures the current frame as a JPEG blob. The
 * camera turns off once a frame is captured (no camera light while the result is read) and on
 * again with "Retake"; a camera that could not start offers "Try again".
 */
export function Camera({ onCapture }: { onCapture: (jpeg: Blob) => void }) {
  const video = useRef<HTMLVideoElement>(null);
  const [error, setError] = useState<string>();
  const [ready, setReady] = useState(false);
  // Each start of the camera; `live` false once a frame was captured.
  const [start, setStart] = useState(0);
  const [live, setLive] = useState(true);

  const supported = cameraSupported();
  const restart = () => {
    setError(undefined);
    setReady(false);
    setLive(true);
    setStart((n) => n + 1);
  };

  useEffect(() => {
    if (!supported || !live) return undefined;
    let stream: MediaStream | undefined;
    let cancelled = false;
    navigator.mediaDevices
      .getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" }, audio: false })
      .then((s) => {
        if (cancelled) {
          s.getTracks().forEach((t) => t.stop());
          return;
        }
        stream = s;
        if (video.current) video.current.srcObject = s;
      })
      .catch((e: unknown) => setError(cameraError(e)));
    return () => {
      cancelled = true;
      stream?.getTracks().forEach((t) => t.stop());
    };
  }, [supported, live, start]);

  const capture = () => {
    const v = video.current;
    if (!v || v.videoWidth === 0) return;
    const canvas = document.createElement("canvas");
    canvas.width = v.videoWidth;
    canvas.height = v.videoHeight;
    canvas.getContext("2d")?.drawImage(v, 0, 0);
    canvas.toBlob(
      (blob) => {
        if (!blob) {
          setError("Could not encode the frame.");
          return;
        }
        onCapture(blob);
        setLive(false);
      },
      "image/jpeg",
      0.92,
    );
  };

  if (!supported) {
    return (
      <p className="error" role="alert">
        {NO_CAMERA_ACCESS}
      </p>
    );
  }
  if (error)
    return (
      <div className="camera">
        <p className="error" role="alert">
          {error}
        </p>
        <button type="button" onClick={restart} data-testid="camera-retry">
          Try again
        </button>
      </div>
    );
  if (!live)
    return (
      <div className="camera">
        <p>Frame captured; the camera is off.</p>
        <button type="button" onClick={restart} data-testid="retake">
          Retake
        </button>
      </div>
    );
  return (
    <div className="camera">
      <video ref={video} autoPlay muted playsInline onLoadedData={() => setReady(true)} aria-label="Camera preview" />
      <button type="button" onClick={capture} disabled={!ready} data-testid="capture">
        Capture frame
      </button>
    </div>
  );
}
