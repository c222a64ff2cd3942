import { useId, useState } from "react";

interface FeatureInputProps {
  index: number;
  name: string;
  value: number;
  onChange: (value: number) => void;
  min?: number;
  max?: number;
}

/** The number a number box's text stands for; undefined while it is none yet ("", "-", "1e"). */
export function parseFeature(text: string): number | undefined {
  if (text.trim() === "") return undefined;
  const v = Number(text);
  return Number.isFinite(v) ? v : undefined;
}

/**
 * The text a number box shows, having shown `text` for the number `shown`, once the number is
 * `value`: the text as typed while the number has not changed elsewhere (so an emptied box or a
 * leading "-" stays while being typed) or the text reads as it ("0.50"), else the number.
 */
export function featureText(text: string, shown: number, value: number): string {
  if (Object.is(value, shown) || parseFeature(text) === value) return text;
  return Number.isFinite(value) ? String(value) : "";
}

/** One fusion feature: a slider over the usual range plus a number box for any finite value. */
export function FeatureInput({ index, name, value, onChange, min = -1, max = 1 }: FeatureInputProps) {
  const id = useId();
  const label = `x${index + 1}`;
  // The box's own text, so that typing through what is not a number yet does not snap back.
  const [box, setBox] = useState(() => ({ text: featureText("", NaN, value), value }));
  if (!Object.is(box.value, value)) setBox({ text: featureText(box.text, box.value, value), value });
  return (
    <div className="feature">
      <label htmlFor={id}>
        <span className="strong">{label}</span> {name}
      </label>
      <input
        type="range"
        min={min}
        max={max}
        step={0.01}
        value={Math.min(max, Math.max(min, value))}
        onChange={(e) => onChange(Number(e.currentTarget.value))}
        aria-label={`${label} ${name} slider`}
      />
      <input
        id={id}
        type="number"
        step={0.01}
        value={box.text}
        onChange={(e) => {
          const text = e.currentTarget.value;
          setBox((b) => ({ ...b, text }));
          const v = parseFeature(text);
          if (v !== undefined) onChange(v);
        }}
        onBlur={() => setBox((b) => ({ ...b, text: featureText(b.text, NaN, b.value) }))}
        data-testid={`feature-${index}`}
      />
    </div>
  );
}
