import { describe, expect, it } from "vitest";
import {
  DEFAULT_FEATURES,
  type FusionWeights,
  forward,
  layoutNetwork,
  parseLayers,
  parseWeights,
  relu,
  sigmoid,
  valueTone,
} from "./mlp";

/** A copy of runtime/weights/reference.json (the seed's hand-set reference weights). */
const REFERENCE: FusionWeights = {
  w1: [
    [0.5, 0.2, -0.1],
    [-0.4, 0.6, 0.3],
    [0.3, -0.2, -0.1],
    [0.8, 0.4, -0.6],
  ],
  b1: [0.1, -0.8, 0.1, 0.4],
  w2: [
    [0.5, 0.3, 0.5, 0.2],
    [-0.5, 0.2, 0.5, -0.1],
    [0.25, -0.3, 0.5, 0.1],
  ],
  b2: [0.1, 0.1, -0.1],
  w3: [[1.0, -0.5, 0.4]],
  b3: [-0.1],
};

const WORKED = {
  z1: [0.8, -1.2, 0.4, 2.0],
  a1: [0.8, 0, 0.4, 2.0],
  z2: [1.1, -0.3, 0.5],
  a2: [1.1, 0, 0.5],
  z3: 1.2,
};

function expectClose(actual: number[], expected: number[]) {
  expect(actual).toHaveLength(expected.length);
  actual.forEach((v, i) => expect(v).toBeCloseTo(expected[i] ?? NaN, 12));
}

describe("activations", () => {
  it("relu clips negatives", () => {
    expect(relu(-1.2)).toBe(0);
    expect(relu(0.4)).toBe(0.4);
  });

  it("sigmoid matches the worked example and stays finite", () => {
    expect(sigmoid(0)).toBe(0.5);
    expect(sigmoid(1.2)).toBeCloseTo(0.7685, 4);
    expect(sigmoid(1000)).toBe(1);
    expect(sigmoid(-1000)).toBe(0);
    expect(sigmoid(-3) + sigmoid(3)).toBeCloseTo(1, 12);
  });
});

describe("forward", () => {
  it("reproduces the seed's worked example with the reference weights", () => {
    const { layers, probability } = forward(REFERENCE, DEFAULT_FEATURES);
    expectClose(layers.z1, WORKED.z1);
    expectClose(layers.a1, WORKED.a1);
    expectClose(layers.z2, WORKED.z2);
    expectClose(layers.a2, WORKED.a2);
    expect(layers.z3).toBeCloseTo(WORKED.z3, 12);
    expect(probability).toBeCloseTo(0.7685, 4);
  });
});

describe("parseLayers", () => {
  it("accepts the API shape", () => {
    expect(parseLayers(WORKED)).toEqual(WORKED);
  });

  it("derives missing activations and accepts z3 as a one-element array", () => {
    const parsed = parseLayers({ z1: WORKED.z1, z2: WORKED.z2, z3: [1.2] });
    expect(parsed?.a1).toEqual([0.8, 0, 0.4, 2.0]);
    expect(parsed?.a2).toEqual([1.1, 0, 0.5]);
    expect(parsed?.z3).toBe(1.2);
  });

  it("rejects wrong shapes", () => {
    expect(parseLayers(undefined)).toBeUndefined();
    expect(parseLayers({ ...WORKED, z1: [1, 2] })).toBeUndefined();
    expect(parseLayers({ ...WORKED, z3: "1" })).toBeUndefined();
  });
});

describe("parseWeights", () => {
  it("accepts matrices of the right shape only", () => {
    expect(parseWeights(REFERENCE)).toEqual(REFERENCE);
    expect(parseWeights("reference")).toBeUndefined();
    expect(parseWeights({ ...REFERENCE, w2: REFERENCE.w1 })).toBeUndefined();
  });
});

describe("layoutNetwork", () => {
  const layout = layoutNetwork(DEFAULT_FEATURES, WORKED, { width: 600, height: 300 });

  it("places 3-4-3-1 nodes left to right, centred vertically", () => {
    expect(layout.nodes.map((l) => l.length)).toEqual([3, 4, 3, 1]);
    const xs = layout.nodes.map((l) => l[0]?.cx ?? NaN);
    expect(xs).toEqual([...xs].sort((a, b) => a - b));
    expect(layout.nodes[3]?.[0]?.cy).toBe(150);
    const ys = layout.nodes[1]?.map((n) => n.cy) ?? [];
    expect((ys[0] ?? 0) + (ys[3] ?? 0)).toBeCloseTo(300, 9);
  });

  it("keeps the requested margins", () => {
    const m = layoutNetwork(DEFAULT_FEATURES, WORKED, {
      width: 600,
      height: 300,
      left: 100,
      right: 50,
      top: 40,
      bottom: 20,
    });
    expect(m.nodes[0]?.[0]?.cx).toBe(100);
    expect(m.nodes[3]?.[0]?.cx).toBe(550);
    expect(m.nodes[3]?.[0]?.cy).toBe(160);
    const ys = m.nodes[1]?.map((n) => n.cy) ?? [];
    expect(ys[0]).toBeCloseTo(40 + 60 / 2, 9);
  });

  it("carries the values: inputs, relu activations, sigmoid output", () => {
    expect(layout.nodes[0]?.map((n) => n.a)).toEqual([1, 0.5, -1]);
    expect(layout.nodes[1]?.map((n) => n.a)).toEqual(WORKED.a1);
    expect(layout.nodes[2]?.map((n) => n.z)).toEqual(WORKED.z2);
    expect(layout.nodes[3]?.[0]?.a).toBeCloseTo(0.7685, 4);
    expect(layout.nodes[1]?.map((n) => n.id)).toEqual(["h1_0", "h1_1", "h1_2", "h1_3"]);
  });

  it("connects adjacent layers fully", () => {
    expect(layout.edges).toHaveLength(3 * 4 + 4 * 3 + 3 * 1);
    const dead = layout.edges.filter((e) => e.from.id === "h1_1");
    expect(dead.every((e) => e.flow === 0)).toBe(true);
  });

  it("weights edges by w * a when matrices are known", () => {
    const weighted = layoutNetwork(DEFAULT_FEATURES, WORKED, { width: 600, height: 300 }, REFERENCE);
    const edge = weighted.edges.find((e) => e.from.id === "h2_0" && e.to.id === "out");
    expect(edge?.weight).toBe(1.0);
    expect(edge?.flow).toBeCloseTo(1.1, 12);
  });
});

describe("valueTone", () => {
  it("maps sign to hue and magnitude to strength", () => {
    expect(valueTone(1)).toEqual({ hue: 210, strength: 0.5 });
    expect(valueTone(-4)).toEqual({ hue: 20, strength: 1 });
    expect(valueTone(0).strength).toBe(0);
    expect(valueTone(NaN).strength).toBe(0);
  });
});
