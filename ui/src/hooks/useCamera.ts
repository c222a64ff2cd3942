import { useEffect, useMemo, useRef, useState } from "react";
import { NO_CAMERA_ACCESS, cameraError, cameraSupported } from "../components/Camera";
import type { FrameSource } from "../lib/challengeRun";

export type CameraStatus = "off" | "opening" | "on" | "error";

/** Frames are scaled down to at most this width: enough for the detector, small to upload. */
const MAX_FRAME_WIDTH = 640;
const JPEG_QUALITY = 0.85;
/** What a camera that stopped on its own says (unplugged, permission revoked, taken over). */
export const CAMERA_STOPPED =
  "The camera stopped (unplugged, its permission revoked, or taken by another program): check it and start again.";

/**
 * The camera while `attempt` is defined (a number that changes for each new start): asks
 * getUserMedia for the user-facing camera, shows it in the returned video element, and stops
 * every track as soon as `attempt` turns undefined or the component unmounts (the camera light
 * goes off when the challenge ends or the view is left). Frames come from the video itself,
 * unmirrored, whatever the preview's CSS does.
 */
export function useCamera(attempt: number | undefined) {
  const videoRef = useRef<HTMLVideoElement>(null);
  // What the camera did for one attempt; "opening" until it says.
  const [outcome, setOutcome] = useState<{ attempt: number; status: "on" | "error"; error?: string }>();
  const supported = cameraSupported();
  // Frames the video has presented (requestVideoFrameCallback), and the count at the last capture:
  // a busy browser may not present a new frame between two captures, and the same image sent
  // twice reads to the runtime as a replay (duplicate_frames).
  const presented = useRef(0);
  const capturedAt = useRef(-1);
  // Set when the camera's video track ends on its own: captures then fail, ending the run.
  const stopped = useRef<string>(undefined);

  useEffect(() => {
    if (attempt === undefined || !supported) return undefined;
    stopped.current = undefined;
    let stream: MediaStream | undefined;
    let cancelled = false;
    const onEnded = () => {
      if (cancelled) return;
      stopped.current = CAMERA_STOPPED;
      setOutcome({ attempt, status: "error", error: CAMERA_STOPPED });
    };
    const video = videoRef.current;
    const onData = () => {
      if (!cancelled && video && video.videoWidth > 0) setOutcome({ attempt, status: "on" });
    };
    video?.addEventListener("loadeddata", onData);
    let frameHandle: number | undefined;
    const onFrame = () => {
      presented.current += 1;
      if (!cancelled && video) frameHandle = video.requestVideoFrameCallback(onFrame);
    };
    if (video && typeof video.requestVideoFrameCallback === "function") {
      frameHandle = video.requestVideoFrameCallback(onFrame);
    }
    navigator.mediaDevices
      .getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" }, audio: false })
      .then((s) => {
        if (cancelled) {
          s.getTracks().forEach((t) => t.stop());
          return;
        }
        stream = s;
        s.getVideoTracks().forEach((t) => t.addEventListener("ended", onEnded));
        if (video) {
          video.srcObject = s;
          void video.play().catch(() => undefined);
          onData();
        }
      })
      .catch((e: unknown) => {
        if (!cancelled) setOutcome({ attempt, status: "error", error: cameraError(e) });
      });
    return () => {
      cancelled = true;
      video?.removeEventListener("loadeddata", onData);
      if (video && frameHandle !== undefined) video.cancelVideoFrameCallback(frameHandle);
      stream?.getVideoTracks().forEach((t) => t.removeEventListener("ended", onEnded));
      stream?.getTracks().forEach((t) => t.stop());
      if (video) video.srcObject = null;
    };
  }, [attempt, supported]);

  let status: CameraStatus = "off";
  let error: string | undefined;
  if (attempt !== undefined && !supported) {
    status = "error";
    error = NO_CAMERA_ACCESS;
  } else if (attempt !== undefined) {
    status = outcome?.attempt === attempt ? outcome.status : "opening";
    error = outcome?.attempt === attempt ? outcome.error : undefined;
  }

  const frames = useMemo<FrameSource>(() => {
    let canvas: HTMLCanvasElement | undefined;
    return {
      capture: () =>
        new Promise<Blob | undefined>((resolve, reject) => {
          if (stopped.current) {
            reject(new Error(stopped.current));
            return;
          }
          const v = videoRef.current;
          if (!v || v.videoWidth === 0 || v.readyState < 2) {
            resolve(undefined);
            return;
          }
          // No new frame since the last capture (where the browser says): skip this tick.
          if (typeof v.requestVideoFrameCallback === "function") {
            if (presented.current === capturedAt.current) {
              resolve(undefined);
              return;
            }
            capturedAt.current = presented.current;
          }
          const scale = Math.min(1, MAX_FRAME_WIDTH / v.videoWidth);
          canvas ??= document.createElement("canvas");
          canvas.width = Math.round(v.videoWidth * scale);
          canvas.height = Math.round(v.videoHeight * scale);
          const ctx = canvas.getContext("2d");
          if (!ctx) {
            reject(new Error("This browser cannot draw camera frames (no 2D canvas)."));
            return;
          }
          ctx.drawImage(v, 0, 0, canvas.width, canvas.height);
          canvas.toBlob((blob) => resolve(blob ?? undefined), "image/jpeg", JPEG_QUALITY);
        }),
    };
  }, []);

  return { videoRef, status, error, frames };
}
