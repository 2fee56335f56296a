import { describe, expect, it } from "vitest";
import { shortcutFor, type KeyLike } from "./shortcuts";

const k = (p: Partial<KeyLike>): KeyLike => ({ key: "", code: "", altKey: false, ctrlKey: false, shiftKey: false, metaKey: false, ...p });

describe("workspace shortcuts", () => {
  it("maps the documented keys", () => {
    expect(shortcutFor(k({ altKey: true, key: "3", code: "Digit3" }))).toEqual({ type: "activate-index", index: 2 });
    expect(shortcutFor(k({ altKey: true, key: "PageUp", code: "PageUp" }))).toEqual({ type: "prev" });
    expect(shortcutFor(k({ altKey: true, key: "PageDown", code: "PageDown" }))).toEqual({ type: "next" });
    expect(shortcutFor(k({ altKey: true, ctrlKey: true, key: "ArrowLeft", code: "ArrowLeft" }))).toEqual({ type: "prev" });
    expect(shortcutFor(k({ altKey: true, ctrlKey: true, key: "ArrowRight", code: "ArrowRight" }))).toEqual({ type: "next" });
    expect(shortcutFor(k({ altKey: true, shiftKey: true, key: "ArrowLeft", code: "ArrowLeft" }))).toEqual({ type: "move", delta: -1 });
    expect(shortcutFor(k({ altKey: true, shiftKey: true, key: "ArrowRight", code: "ArrowRight" }))).toEqual({ type: "move", delta: 1 });
    expect(shortcutFor(k({ altKey: true, key: "t", code: "KeyT" }))).toEqual({ type: "new-terminal" });
    expect(shortcutFor(k({ altKey: true, key: "w", code: "KeyW" }))).toEqual({ type: "close" });
  });

  it("reads the physical key on macOS, where Alt changes the character", () => {
    expect(shortcutFor(k({ altKey: true, key: "†", code: "KeyT" }))).toEqual({ type: "new-terminal" });
    expect(shortcutFor(k({ altKey: true, key: "¡", code: "Digit1" }))).toEqual({ type: "activate-index", index: 0 });
  });

  it("leaves other keys to the terminal and editor", () => {
    expect(shortcutFor(k({ key: "t", code: "KeyT" }))).toBeNull();
    expect(shortcutFor(k({ ctrlKey: true, key: "w", code: "KeyW" }))).toBeNull();
    expect(shortcutFor(k({ altKey: true, key: "0", code: "Digit0" }))).toBeNull();
    expect(shortcutFor(k({ altKey: true, key: "b", code: "KeyB" }))).toBeNull();
    expect(shortcutFor(k({ altKey: true, metaKey: true, key: "t", code: "KeyT" }))).toBeNull();
    expect(shortcutFor(k({ altKey: true, ctrlKey: true, key: "t", code: "KeyT" }))).toBeNull();
    expect(shortcutFor(k({ altKey: true, key: "ArrowLeft", code: "ArrowLeft" }))).toBeNull();
  });
});
