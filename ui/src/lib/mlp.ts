/**
 * The maths of the 3-4-3-1 score-fusion MLP (ReLU, ReLU, sigmoid) as the UI displays it:
 * completing the layer values the server returns, the forward pass when weight matrices are
 * known, and the layout and colours of the network drawing.
 */

export const LAYER_SIZES = [3, 4, 3, 1] as const;
export const FEATURE_NAMES = ["match similarity", "liveness", "quality"] as const;
export const DEFAULT_FEATURES: readonly [number, number, number] = [1, 0.5, -1];

export interface Layers {
  z1: number[];
  a1: number[];
  z2: number[];
  a2: number[];
  z3: number;
}

export interface FusionWeights {
  w1: number[][];
  b1: number[];
  w2: number[][];
  b2: number[];
  w3: number[][];
  b3: number[];
}

export const relu = (z: number): number => Math.max(0, z);

/** The logistic function, written to stay finite for large |z|. */
export function sigmoid(z: number): number {
  if (z >= 0) return 1 / (1 + Math.exp(-z));
  const e = Math.exp(z);
  return e / (1 + e);
}

function affine(w: number[][], b: number[], x: readonly number[]): number[] {
  return w.map((row, i) => row.reduce((acc, wij, j) => acc + wij * (x[j] ?? 0), b[i] ?? 0));
}

/** The full forward pass: `a = relu(W x + b)` twice, then `p = sigmoid(W3 a2 + b3)`. */
export function forward(weights: FusionWeights, x: readonly number[]): { layers: Layers; probability: number } {
  const z1 = affine(weights.w1, weights.b1, x);
  const a1 = z1.map(relu);
  const z2 = affine(weights.w2, weights.b2, a1);
  const a2 = z2.map(relu);
  const z3 = affine(weights.w3, weights.b3, a2)[0] ?? 0;
  return { layers: { z1, a1, z2, a2, z3 }, probability: sigmoid(z3) };
}

/** True when `value` is a numeric matrix of `rows` x `cols`. */
function isMatrix(value: unknown, rows: number, cols: number): value is number[][] {
  return (
    Array.isArray(value) &&
    value.length === rows &&
    value.every((r) => Array.isArray(r) && r.length === cols && r.every((v) => typeof v === "number"))
  );
}

function isVector(value: unknown, len: number): value is number[] {
  return Array.isArray(value) && value.length === len && value.every((v) => typeof v === "number");
}

/** Read weight matrices from an API value, or `undefined` when it holds none of the right shape. */
export function parseWeights(value: unknown): FusionWeights | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const v = value as Record<string, unknown>;
  const [n0, n1, n2, n3] = LAYER_SIZES;
  if (
    isMatrix(v.w1, n1, n0) &&
    isVector(v.b1, n1) &&
    isMatrix(v.w2, n2, n1) &&
    isVector(v.b2, n2) &&
    isMatrix(v.w3, n3, n2) &&
    isVector(v.b3, n3)
  ) {
    return { w1: v.w1, b1: v.b1, w2: v.w2, b2: v.b2, w3: v.w3, b3: v.b3 };
  }
  return undefined;
}

/**
 * Read layer values from an API value. Pre-activations are required; activations missing or
 * of the wrong length are derived with ReLU. `undefined` when the value is not usable.
 */
export function parseLayers(value: unknown): Layers | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const v = value as Record<string, unknown>;
  const [, n1, n2] = LAYER_SIZES;
  const z3 = Array.isArray(v.z3) ? v.z3[0] : v.z3;
  if (!isVector(v.z1, n1) || !isVector(v.z2, n2) || typeof z3 !== "number") return undefined;
  return {
    z1: v.z1,
    a1: isVector(v.a1, n1) ? v.a1 : v.z1.map(relu),
    z2: v.z2,
    a2: isVector(v.a2, n2) ? v.a2 : v.z2.map(relu),
    z3,
  };
}

export interface NetNode {
  /** Stable id such as `x0`, `h1_2`, `h2_0`, `out`. */
  id: string;
  layer: number;
  index: number;
  cx: number;
  cy: number;
  /** Pre-activation (the input value itself for the input layer). */
  z: number;
  /** Activation: the input, `relu(z)` for hidden nodes, `sigmoid(z)` for the output. */
  a: number;
}

export interface NetEdge {
  from: NetNode;
  to: NetNode;
  /** `w * a_from` when weights are known, otherwise `a_from`: what flows along the edge. */
  flow: number;
  weight: number | undefined;
}

export interface NetLayout {
  width: number;
  height: number;
  nodes: NetNode[][];
  edges: NetEdge[];
}

export interface LayoutSize {
  width: number;
  height: number;
  /** Room kept free left of the inputs and right of the output (default 12 % of the width). */
  left?: number;
  right?: number;
  /** Room kept free above and below the tallest layer (default 0). */
  top?: number;
  bottom?: number;
}

/** Positions, values and edges of the 3-4-3-1 network for an SVG of `width` x `height`. */
export function layoutNetwork(
  features: readonly number[],
  layers: Layers,
  size: LayoutSize,
  weights?: FusionWeights,
): NetLayout {
  const { width, height, left = width * 0.12, right = width * 0.12, top = 0, bottom = 0 } = size;
  const values: { z: number; a: number }[][] = [
    Array.from({ length: LAYER_SIZES[0] }, (_, i) => ({ z: features[i] ?? 0, a: features[i] ?? 0 })),
    layers.z1.map((z, i) => ({ z, a: layers.a1[i] ?? relu(z) })),
    layers.z2.map((z, i) => ({ z, a: layers.a2[i] ?? relu(z) })),
    [{ z: layers.z3, a: sigmoid(layers.z3) }],
  ];
  const stepX = (width - left - right) / (LAYER_SIZES.length - 1);
  const maxNodes = Math.max(...LAYER_SIZES);
  const inner = height - top - bottom;
  const stepY = inner / maxNodes;
  const midY = top + inner / 2;
  const nodes = values.map((layer, l) =>
    layer.map(({ z, a }, i) => ({
      id: l === 0 ? `x${i}` : l === LAYER_SIZES.length - 1 ? "out" : `h${l}_${i}`,
      layer: l,
      index: i,
      cx: left + l * stepX,
      cy: midY + (i - (layer.length - 1) / 2) * stepY,
      z,
      a,
    })),
  );
  const matrices = weights ? [weights.w1, weights.w2, weights.w3] : [];
  const edges: NetEdge[] = [];
  for (let l = 0; l + 1 < nodes.length; l++) {
    for (const to of nodes[l + 1] ?? []) {
      for (const from of nodes[l] ?? []) {
        const weight = matrices[l]?.[to.index]?.[from.index];
        edges.push({ from, to, weight, flow: weight === undefined ? from.a : weight * from.a });
      }
    }
  }
  return { width, height, nodes, edges };
}

/**
 * A colour for a signed value: hue 210 (blue) for positive, 20 (orange) for negative, with
 * strength |v| / scale clipped to [0, 1]; exact zeros are neutral (strength 0).
 */
export function valueTone(value: number, scale = 2): { hue: number; strength: number } {
  if (!Number.isFinite(value) || value === 0 || !(scale > 0)) return { hue: 0, strength: 0 };
  return { hue: value > 0 ? 210 : 20, strength: Math.min(1, Math.abs(value) / scale) };
}
