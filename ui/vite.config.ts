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
    proxy: {
      "/v1": runtime,
      "/metrics": runtime,
      "/healthz": runtime,
      "/readyz": runtime,
      "/openapi.json": runtime,
      "/docs": runtime,
    },
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
