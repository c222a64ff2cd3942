import { useId } from "react";

interface FeatureInputProps {
  index: number;
  name: string;
  value: number;
  onChange: (value: number) => void;
  min?: number;
  max?: number;
}

/** One fusion feature: a slider over the usual range plus a number box for any finite value. */
export function FeatureInput({ index, name, value, onChange, min = -1, max = 1 }: FeatureInputProps) {
  const id = useId();
  const label = `x${index + 1}`;
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
        value={Number.isFinite(value) ? value : ""}
        onChange={(e) => {
          const v = e.currentTarget.valueAsNumber;
          if (Number.isFinite(v)) onChange(v);
        }}
        data-testid={`feature-${index}`}
      />
    </div>
  );
}
