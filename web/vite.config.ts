/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

const backend = "http://127.0.0.1:7070";

export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "dist",
    sourcemap: false,
    chunkSizeWarningLimit: 700,
    rollupOptions: {
      output: {
        // name lazy chunks after their package (lang-python, ...) instead of "dist"
        chunkFileNames: (chunk) => {
          const id = chunk.facadeModuleId ?? chunk.moduleIds[0] ?? "";
          const pkg = /node_modules\/(?:@[^/]+\/)?([^/]+)\//.exec(id)?.[1];
          return `assets/${pkg ?? "[name]"}-[hash].js`;
        },
      },
    },
  },
  server: {
    proxy: {
      "/api": { target: backend, ws: true, changeOrigin: false },
      "/graphql": { target: backend, ws: true, changeOrigin: false },
      "/healthz": { target: backend },
    },
  },
  test: {
    environment: "jsdom",
    // e2e/ runs under node --test against a real server (scripts/test.sh)
    exclude: ["node_modules/**", "dist/**", "e2e/**"],
    globals: true,
    setupFiles: ["./src/test/setup.ts"],
    css: false,
    restoreMocks: true,
  },
});
