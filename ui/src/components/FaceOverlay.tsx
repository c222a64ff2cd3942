import { useState } from "react";
import { type Face, LANDMARK_NAMES } from "../api";

/** An image with the detected face box and its five landmarks drawn over it in image pixels. */
export function FaceOverlay({ src, face, alt }: { src: string; face?: Face; alt: string }) {
  const [size, setSize] = useState<{ w: number; h: number }>();
  const stroke = size ? Math.max(2, Math.min(size.w, size.h) / 160) : 2;
  return (
    <div className="overlay">
      <img
        src={src}
        alt={alt}
        onLoad={(e) => setSize({ w: e.currentTarget.naturalWidth, h: e.currentTarget.naturalHeight })}
      />
      {size && face ? (
        <svg
          viewBox={`0 0 ${size.w} ${size.h}`}
          preserveAspectRatio="none"
          role="img"
          aria-label={`Detected face at ${Math.round(face.box.x)}, ${Math.round(face.box.y)}, ${Math.round(face.box.width)} by ${Math.round(face.box.height)} pixels, with ${face.landmarks.length} landmarks`}
          data-testid="face-overlay"
        >
          <rect
            x={face.box.x}
            y={face.box.y}
            width={face.box.width}
            height={face.box.height}
            className="face-box"
            strokeWidth={stroke}
          />
          {face.landmarks.map(([x, y], i) => (
            <circle
              key={i}
              cx={x}
              cy={y}
              r={stroke * 1.8}
              className={`landmark landmark-${i}`}
              strokeWidth={stroke / 2}
            >
              <title>{LANDMARK_NAMES[i] ?? `point ${i + 1}`}</title>
            </circle>
          ))}
        </svg>
      ) : null}
    </div>
  );
}
