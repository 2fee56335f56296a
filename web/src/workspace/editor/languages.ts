import type { Extension } from "@codemirror/state";

type Loader = () => Promise<Extension>;

/** Each language is its own chunk, fetched the first time a file needs it. */
const BY_EXT: Record<string, Loader> = {
  js: () => import("@codemirror/lang-javascript").then((m) => m.javascript()),
  mjs: () => import("@codemirror/lang-javascript").then((m) => m.javascript()),
  cjs: () => import("@codemirror/lang-javascript").then((m) => m.javascript()),
  jsx: () => import("@codemirror/lang-javascript").then((m) => m.javascript({ jsx: true })),
  ts: () => import("@codemirror/lang-javascript").then((m) => m.javascript({ typescript: true })),
  mts: () => import("@codemirror/lang-javascript").then((m) => m.javascript({ typescript: true })),
  tsx: () => import("@codemirror/lang-javascript").then((m) => m.javascript({ typescript: true, jsx: true })),
  py: () => import("@codemirror/lang-python").then((m) => m.python()),
  json: () => import("@codemirror/lang-json").then((m) => m.json()),
  jsonc: () => import("@codemirror/lang-json").then((m) => m.json()),
  md: () => import("@codemirror/lang-markdown").then((m) => m.markdown()),
  markdown: () => import("@codemirror/lang-markdown").then((m) => m.markdown()),
  html: () => import("@codemirror/lang-html").then((m) => m.html()),
  htm: () => import("@codemirror/lang-html").then((m) => m.html()),
  css: () => import("@codemirror/lang-css").then((m) => m.css()),
  rs: () => import("@codemirror/lang-rust").then((m) => m.rust()),
  yaml: () => import("@codemirror/lang-yaml").then((m) => m.yaml()),
  yml: () => import("@codemirror/lang-yaml").then((m) => m.yaml()),
};

const BY_NAME: Record<string, string> = {
  "pinacle.yaml": "yaml",
  "devcontainer.json": "json",
  "package.json": "json",
  "tsconfig.json": "jsonc",
  "Cargo.lock": "",
};

/** The language key of a file ("ts", "py", ...) or null for plain text. */
export function languageKey(path: string): string | null {
  const name = path.split("/").pop() ?? path;
  if (name in BY_NAME) return BY_NAME[name] || null;
  const dot = name.lastIndexOf(".");
  if (dot <= 0) return null;
  const ext = name.slice(dot + 1).toLowerCase();
  return ext in BY_EXT ? ext : null;
}

export function loadLanguage(path: string): Promise<Extension> | null {
  const key = languageKey(path);
  return key ? BY_EXT[key]!() : null;
}
