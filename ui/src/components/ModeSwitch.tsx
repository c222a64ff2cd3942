import { useId } from "react";

/** How a face is sent: one image, or the camera liveness challenge. */
export type Mode = "image" | "challenge";

const MODES: [Mode, string][] = [
  ["image", "Single image"],
  ["challenge", "Liveness challenge"],
];

/**
 * The image / liveness-challenge switch of the verify and identify views: a radio group whose
 * inputs are `${testIdPrefix}-${mode}` for the browser test.
 */
export function ModeSwitch({
  mode,
  onChange,
  label,
  testIdPrefix,
}: {
  mode: Mode;
  onChange: (mode: Mode) => void;
  label: string;
  testIdPrefix: string;
}) {
  const name = useId();
  return (
    <div className="segmented mode-switch" role="radiogroup" aria-label={label}>
      {MODES.map(([m, text]) => (
        <label key={m} className={mode === m ? "active" : undefined}>
          <input
            type="radio"
            name={name}
            value={m}
            checked={mode === m}
            onChange={() => onChange(m)}
            data-testid={`${testIdPrefix}-${m}`}
          />
          {text}
        </label>
      ))}
    </div>
  );
}
