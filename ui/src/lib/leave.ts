/**
 * Call `leave` when the page goes away (`pagehide`: the tab closed or reloaded, a link followed
 * in it), which unmounts nothing, and when the returned cleanup runs (the view unmounts). A
 * request `leave` sends must be made with `keepalive` to outlive the page.
 */
export function whenLeaving(target: EventTarget, leave: () => void): () => void {
  target.addEventListener("pagehide", leave);
  return () => {
    target.removeEventListener("pagehide", leave);
    leave();
  };
}
