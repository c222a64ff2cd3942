import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

const runtime = "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    sourcemap: false,
  },
  server: {
    // The API goes to a runtime on the default port; /docs, /fusion, ... stay with the app.
    proxy: {
      "/v1": runtime,
      "^/(metrics|healthz|readyz|openapi\\.json)$": runtime,
    },
  },
  test: {
    include: ["src/**/*.test.ts", "src/**/*.test.tsx"],
    environment: "node",
  },
});
