import { useId } from "react";
import { fixed, signed } from "../lib/format";
import { FEATURE_NAMES, type FusionWeights, type Layers, type NetNode, layoutNetwork, valueTone } from "../lib/mlp";

const W = 760;
const H = 360;
const R = 23;
const HEADINGS = ["input x", "hidden 1 · ReLU", "hidden 2 · ReLU", "output · sigmoid"];

function fill(value: number): string {
  const { hue, strength } = valueTone(value);
  return strength === 0 ? "var(--node-zero)" : `hsl(${hue} 80% 52% / ${(0.18 + 0.72 * strength).toFixed(3)})`;
}

function stroke(value: number): string {
  const { hue, strength } = valueTone(value);
  return strength === 0 ? "var(--muted)" : `hsl(${hue} 75% 45%)`;
}

function Node({ node, last }: { node: NetNode; last: boolean }) {
  const input = node.layer === 0;
  const dead = !input && !last && node.a === 0;
  const name = input ? `x${node.index + 1}` : last ? "p" : `a${node.layer}${node.index + 1}`;
  const label = input
    ? `${name} (${FEATURE_NAMES[node.index]}) = ${fixed(node.a)}`
    : last
      ? `z3 = ${fixed(node.z)}, probability = ${fixed(node.a, 4)}`
      : `z = ${fixed(node.z)}, a = ${fixed(node.a)}${dead ? " (inactive)" : ""}`;
  return (
    <g
      className={`node${dead ? " node-dead" : ""}`}
      data-testid={`node-${node.id}`}
      data-z={node.z}
      data-a={node.a}
      role="img"
      aria-label={`${input ? "input" : last ? "output" : `hidden layer ${node.layer} node ${node.index + 1}`}: ${label}`}
    >
      <title>{label}</title>
      <circle
        cx={node.cx}
        cy={node.cy}
        r={R}
        fill={fill(last ? node.z : node.a)}
        stroke={stroke(last ? node.z : node.a)}
        strokeDasharray={dead ? "4 3" : undefined}
      />
      <text x={node.cx} y={node.cy + 4} className="node-a" textAnchor="middle">
        {last ? fixed(node.a, 2) : fixed(node.a)}
      </text>
      {input ? (
        <text x={node.cx - R - 8} y={node.cy + 4} textAnchor="end" className="node-side">
          <tspan className="strong">{name}</tspan> {FEATURE_NAMES[node.index]}
        </text>
      ) : (
        <text x={node.cx} y={node.cy + R + 14} textAnchor="middle" className="node-z">
          {last ? "z3" : "z"} {signed(node.z)}
        </text>
      )}
      {last ? (
        <text x={node.cx + R + 10} y={node.cy + 5} className="node-side">
          <tspan className="strong">p</tspan> = <tspan className="node-p">{fixed(node.a, 4)}</tspan>
        </text>
      ) : null}
    </g>
  );
}

interface NetworkViewProps {
  features: readonly number[];
  layers: Layers;
  weights?: FusionWeights;
  /** Accessible title of the figure. */
  title?: string;
}

/**
 * The 3-4-3-1 fusion network as an SVG: every node shows its activation (and pre-activation
 * below), coloured blue for positive, orange for negative and grey for zero; edges carry the
 * signal `w·a` when weights are known, otherwise the source activation.
 */
export function NetworkView({ features, layers, weights, title = "Score-fusion network" }: NetworkViewProps) {
  const titleId = useId();
  const layout = layoutNetwork(
    features,
    layers,
    { width: W, height: H, left: 190, right: 130, top: 34, bottom: 26 },
    weights,
  );
  const lastLayer = layout.nodes.length - 1;
  return (
    <figure className="network">
      <svg viewBox={`0 0 ${W} ${H}`} role="group" aria-labelledby={titleId} data-testid="network">
        <title id={titleId}>{title}</title>
        {layout.nodes.map((layer, l) => (
          <text key={l} x={layer[0]?.cx} y={14} textAnchor="middle" className="layer-heading">
            {HEADINGS[l]}
          </text>
        ))}
        <g className="edges" aria-hidden="true">
          {layout.edges.map((e) => {
            const { hue, strength } = valueTone(e.flow);
            return (
              <line
                key={`${e.from.id}-${e.to.id}`}
                x1={e.from.cx + R}
                y1={e.from.cy}
                x2={e.to.cx - R}
                y2={e.to.cy}
                stroke={strength === 0 ? "var(--edge-zero)" : `hsl(${hue} 70% 50%)`}
                strokeOpacity={strength === 0 ? 0.5 : 0.25 + 0.6 * strength}
                strokeWidth={0.8 + 3 * strength}
              />
            );
          })}
        </g>
        {layout.nodes.flat().map((n) => (
          <Node key={n.id} node={n} last={n.layer === lastLayer} />
        ))}
      </svg>
      <figcaption className="muted small">
        a = max(0, z) in the hidden layers; p = σ(z3) = 1 / (1 + e<sup>−z3</sup>). Blue positive, orange negative,
        dashed nodes are inactive (ReLU output 0).
        {weights ? " Edge width shows w·a." : " Edge width shows the activation each node sends on."}
      </figcaption>
    </figure>
  );
}
