/** CodeMirror 6 setup: a dark theme, the usual editing extensions and a
 *  compartment for the language, which loads on demand. */
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import {
  HighlightStyle,
  bracketMatching,
  foldGutter,
  foldKeymap,
  indentOnInput,
  syntaxHighlighting,
} from "@codemirror/language";
import { highlightSelectionMatches, searchKeymap } from "@codemirror/search";
import { Compartment, EditorState, type Extension } from "@codemirror/state";
import {
  EditorView,
  crosshairCursor,
  drawSelection,
  dropCursor,
  highlightActiveLine,
  highlightActiveLineGutter,
  highlightSpecialChars,
  keymap,
  lineNumbers,
  rectangularSelection,
} from "@codemirror/view";
import { tags as t } from "@lezer/highlight";

export { EditorState, EditorView };

export const language = new Compartment();

const theme = EditorView.theme(
  {
    "&": { color: "#d4d7e0", backgroundColor: "#0f1117", height: "100%" },
    ".cm-content": { caretColor: "#7aa2f7", fontFamily: "var(--mono)" },
    ".cm-scroller": { fontFamily: "var(--mono)", lineHeight: "1.5" },
    "&.cm-focused .cm-cursor": { borderLeftColor: "#7aa2f7" },
    "&.cm-focused .cm-selectionBackground, .cm-selectionBackground, ::selection": { backgroundColor: "#2f3b5c" },
    ".cm-gutters": { backgroundColor: "#0f1117", color: "#4e5572", border: "none" },
    ".cm-activeLineGutter": { backgroundColor: "#161a24", color: "#9aa3bd" },
    ".cm-activeLine": { backgroundColor: "#161a2480" },
    ".cm-selectionMatch": { backgroundColor: "#3b4261" },
    ".cm-matchingBracket": { backgroundColor: "#3b4261", outline: "1px solid #7aa2f7" },
    ".cm-panels": { backgroundColor: "#161a24", color: "#d4d7e0" },
    ".cm-searchMatch": { backgroundColor: "#e0af6840" },
    ".cm-foldPlaceholder": { backgroundColor: "#2a2f3d", color: "#9aa3bd", border: "none" },
  },
  { dark: true },
);

const highlight = HighlightStyle.define([
  { tag: t.keyword, color: "#bb9af7" },
  { tag: [t.name, t.deleted, t.character, t.macroName], color: "#c0caf5" },
  { tag: [t.propertyName], color: "#7dcfff" },
  { tag: [t.function(t.variableName), t.labelName], color: "#7aa2f7" },
  { tag: [t.color, t.constant(t.name), t.standard(t.name)], color: "#ff9e64" },
  { tag: [t.definition(t.name), t.separator], color: "#c0caf5" },
  { tag: [t.typeName, t.className, t.number, t.changed, t.annotation, t.modifier, t.self, t.namespace], color: "#e0af68" },
  { tag: [t.operator, t.operatorKeyword, t.url, t.escape, t.regexp, t.link, t.special(t.string)], color: "#89ddff" },
  { tag: [t.meta, t.comment], color: "#5c6482", fontStyle: "italic" },
  { tag: t.strong, fontWeight: "bold" },
  { tag: t.emphasis, fontStyle: "italic" },
  { tag: t.strikethrough, textDecoration: "line-through" },
  { tag: t.link, textDecoration: "underline" },
  { tag: t.heading, fontWeight: "bold", color: "#7aa2f7" },
  { tag: [t.atom, t.bool, t.special(t.variableName)], color: "#ff9e64" },
  { tag: [t.processingInstruction, t.string, t.inserted], color: "#9ece6a" },
  { tag: t.invalid, color: "#f7768e" },
]);

const base: Extension = [
  lineNumbers(),
  highlightActiveLineGutter(),
  highlightSpecialChars(),
  history(),
  foldGutter(),
  drawSelection(),
  dropCursor(),
  EditorState.allowMultipleSelections.of(true),
  indentOnInput(),
  syntaxHighlighting(highlight, { fallback: true }),
  bracketMatching(),
  rectangularSelection(),
  crosshairCursor(),
  highlightActiveLine(),
  highlightSelectionMatches(),
  keymap.of([...defaultKeymap, ...searchKeymap, ...historyKeymap, ...foldKeymap, indentWithTab]),
  theme,
];

export function createState(text: string, opts: { readOnly: boolean; onChange: (state: EditorState, docChanged: boolean) => void }): EditorState {
  return EditorState.create({
    doc: text,
    extensions: [
      base,
      language.of([]),
      EditorState.readOnly.of(opts.readOnly),
      EditorView.contentAttributes.of({ "aria-label": "File contents" }),
      EditorView.updateListener.of((u) => opts.onChange(u.state, u.docChanged)),
    ],
  });
}
