// The caption overlay's pure part: a partial is replaced in place by later ones with its id
// and by its final; a new line is added; only the newest lines stay.
import { test } from "node:test";
import assert from "node:assert/strict";
import { withCaption } from "../../client/captions.js";

const line = (id, text, final = false) => ({ id, source: "human", text, final, start_ms: 0, end_ms: 0 });

test("a final replaces its partials, new lines are added, three stay", () => {
  let lines = [];
  lines = withCaption(lines, line(1, "Wel"));
  lines = withCaption(lines, line(1, "Welcome to"));
  assert.deepEqual(lines.map((l) => l.text), ["Welcome to"]);
  lines = withCaption(lines, line(1, "Welcome to the launch.", true));
  lines = withCaption(lines, line(2, "Today"));
  assert.deepEqual(lines.map((l) => [l.id, l.text, l.final]), [[1, "Welcome to the launch.", true], [2, "Today", false]]);
  for (const id of [3, 4, 5]) lines = withCaption(lines, line(id, `line ${id}`, true));
  assert.deepEqual(lines.map((l) => l.id), [3, 4, 5]);
});
