// Validates AsyncAPI documents with @asyncapi/parser, the parser and rules that
// `asyncapi validate` (the AsyncAPI CLI) runs, at a tenth of the CLI's install.
//
//   node .ci/asyncapi/validate.mjs FILE...
//
// Prints every diagnostic; exits 1 when any file has an error (the CLI's default
// --fail-severity), or cannot be parsed at all.
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const SEVERITY = ["error", "warning", "info", "hint"];
const parser = new Parser();
let failed = false;
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await parser.parse(await readFile(file, "utf8"), {
    source: file,
  });
  for (const d of diagnostics) {
    const where = d.path.join(".") || "(document)";
    console.log(`${file}: ${SEVERITY[d.severity]} ${d.code} at ${where}: ${d.message}`);
  }
  const errors = diagnostics.filter((d) => d.severity === 0).length;
  if (errors > 0 || document === undefined) {
    console.log(`${file}: INVALID (${errors} error(s))`);
    failed = true;
  } else {
    console.log(`${file}: valid AsyncAPI ${document.version()}`);
  }
}
process.exit(failed ? 1 : 0);
