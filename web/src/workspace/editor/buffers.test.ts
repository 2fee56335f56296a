import { describe, expect, it } from "vitest";
import {
  beginSave,
  bufferAriaLabel,
  bufferLabel,
  closeBuffer,
  editBuffer,
  emptyBuffers,
  getBuffer,
  isDirty,
  openBuffer,
  reloadBuffer,
  saveCondition,
  saveConflicted,
  saveFailed,
  saveSucceeded,
} from "./buffers";

const P = "/workspace/src/main.rs";

describe("editor buffers", () => {
  it("marks a buffer dirty when edited and clean when the text is back", () => {
    let s = openBuffer(emptyBuffers, P, "fn main() {}", '"e1"');
    let b = getBuffer(s, P)!;
    expect(isDirty(b)).toBe(false);
    expect(bufferLabel(b)).toBe("main.rs");
    expect(bufferAriaLabel(b)).toBe("main.rs");

    s = editBuffer(s, P, "fn main() { run() }");
    b = getBuffer(s, P)!;
    expect(b.status).toBe("dirty");
    expect(bufferLabel(b)).toBe("● main.rs");
    expect(bufferAriaLabel(b)).toBe("main.rs, modified");

    s = editBuffer(s, P, "fn main() {}");
    expect(getBuffer(s, P)!.status).toBe("clean");
  });

  it("saves with If-Match on the ETag it read, then takes the new ETag", () => {
    let s = openBuffer(emptyBuffers, P, "a", '"e1"');
    s = editBuffer(s, P, "ab");
    expect(saveCondition(getBuffer(s, P)!)).toEqual({ ifMatch: '"e1"' });
    s = beginSave(s, P);
    expect(getBuffer(s, P)!.status).toBe("saving");
    // typing during the save
    s = editBuffer(s, P, "abc");
    expect(getBuffer(s, P)!.status).toBe("saving");
    s = saveSucceeded(s, P, "ab", '"e2"');
    const b = getBuffer(s, P)!;
    expect(b.etag).toBe('"e2"');
    expect(b.savedText).toBe("ab");
    expect(b.status).toBe("dirty"); // "abc" is not saved yet
    expect(saveCondition(b)).toEqual({ ifMatch: '"e2"' });
  });

  it("a new file saves with If-None-Match: *; no ETag means no precondition", () => {
    const s = openBuffer(emptyBuffers, "/workspace/new.txt", "", null, { isNew: true });
    expect(isDirty(getBuffer(s, "/workspace/new.txt")!)).toBe(true);
    expect(saveCondition(getBuffer(s, "/workspace/new.txt")!)).toEqual({ ifNoneMatch: "*" });
    const t = openBuffer(emptyBuffers, P, "x", null);
    expect(saveCondition(getBuffer(t, P)!)).toBe("force");
  });

  it("a 412 puts the buffer in conflict until reloaded or overwritten", () => {
    let s = openBuffer(emptyBuffers, P, "old", '"e1"');
    s = editBuffer(s, P, "mine");
    s = beginSave(s, P);
    s = saveConflicted(s, P);
    let b = getBuffer(s, P)!;
    expect(b.status).toBe("conflict");
    expect(bufferAriaLabel(b)).toBe("main.rs, modified, changed on disk");
    // editing keeps the conflict visible
    s = editBuffer(s, P, "mine too");
    expect(getBuffer(s, P)!.status).toBe("conflict");

    // Reload: theirs, edits dropped
    const reloaded = reloadBuffer(s, P, "theirs", '"e9"');
    b = getBuffer(reloaded, P)!;
    expect(b).toMatchObject({ text: "theirs", savedText: "theirs", etag: '"e9"', status: "clean" });

    // Overwrite: a forced save succeeds
    const overwritten = saveSucceeded(beginSave(s, P), P, "mine too", '"e10"');
    expect(getBuffer(overwritten, P)!.status).toBe("clean");
  });

  it("a failed save keeps the edits and says why", () => {
    let s = editBuffer(openBuffer(emptyBuffers, P, "a", '"e1"'), P, "b");
    s = saveFailed(beginSave(s, P), P, "disk full");
    expect(getBuffer(s, P)).toMatchObject({ status: "dirty", error: "disk full", text: "b" });
  });

  it("opening an open file activates it; closing activates a neighbour", () => {
    let s = openBuffer(emptyBuffers, "/a", "", null);
    s = openBuffer(s, "/b", "", null);
    s = openBuffer(s, "/c", "", null);
    expect(s.active).toBe("/c");
    s = openBuffer(s, "/a", "changed?", null);
    expect(s.active).toBe("/a");
    expect(getBuffer(s, "/a")!.text).toBe("");
    expect(s.open).toHaveLength(3);
    s = closeBuffer(s, "/a");
    expect(s.active).toBe("/b");
    s = closeBuffer({ ...s, active: "/c" }, "/c");
    expect(s.active).toBe("/b");
  });
});
