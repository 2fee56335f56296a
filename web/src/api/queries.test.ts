import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { buildSchema, parse, validate } from "graphql";
import { describe, expect, it } from "vitest";
import * as queries from "./queries";

// The schema the server publishes (generated from api/src/graphql.rs and
// checked there): every document the app sends must be valid against it.
const schema = buildSchema(readFileSync(resolve(process.cwd(), "schema.graphql"), "utf8"));

describe("GraphQL documents", () => {
  const documents = Object.entries(queries).filter(([, v]) => typeof v === "string" && /^\s*(query|mutation|subscription)\b/.test(v as string));

  it("covers the app's operations", () => {
    expect(documents.length).toBeGreaterThan(20);
  });

  it.each(documents)("%s is valid against web/schema.graphql", (_name, doc) => {
    const errors = validate(schema, parse(doc as string));
    expect(errors.map((e) => e.message)).toEqual([]);
  });
});
