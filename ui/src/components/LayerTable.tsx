import { fixed, signed } from "../lib/format";
import { type Layers, sigmoid } from "../lib/mlp";

/** The layer values as a table: the same numbers as the drawing, readable by screen readers. */
export function LayerTable({ layers }: { layers: Layers }) {
  const rows: [string, string, number[]][] = [
    ["z1", "W1·x + b1", layers.z1],
    ["a1", "ReLU(z1)", layers.a1],
    ["z2", "W2·a1 + b2", layers.z2],
    ["a2", "ReLU(z2)", layers.a2],
    ["z3", "W3·a2 + b3", [layers.z3]],
    ["p", "σ(z3)", [sigmoid(layers.z3)]],
  ];
  return (
    <table className="layers" data-testid="layer-table">
      <caption className="sr-only">Layer values of the fusion network</caption>
      <tbody>
        {rows.map(([name, formula, values]) => (
          <tr key={name}>
            <th scope="row">
              {name} <span className="muted small">= {formula}</span>
            </th>
            <td className="num" data-testid={`layer-${name}`}>
              [{values.map((v) => (name === "p" ? fixed(v, 4) : signed(v))).join(", ")}]
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
