// The client's JSDoc types, checked by TypeScript (`// @ts-check` in every module, strict mode,
// client/jsconfig.json): a wrong field, argument count or null case fails here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";

const ROOT = path.resolve(import.meta.dirname, "../..");

test("client modules type-check", { timeout: 120_000 }, () => {
  const tsc = path.join(ROOT, "node_modules/typescript/bin/tsc");
  const r = spawnSync(process.execPath, [tsc, "-p", path.join(ROOT, "client/jsconfig.json")], { encoding: "utf8" });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
});
