// Validates an AsyncAPI document with the AsyncAPI parser (its schema, references, and the
// payload schemas they point to): prints each error, one line each, and exits 1 on any.
// Usage: node validate-asyncapi.mjs DOCUMENT (run where @asyncapi/parser is installed).
import { Parser, fromFile } from '@asyncapi/parser';

const path = process.argv[2];
const { document, diagnostics } = await fromFile(new Parser(), path).parse();
// Severity 0 is an error; the rest are hints (such as "a newer AsyncAPI version exists").
const errors = diagnostics.filter((d) => d.severity === 0);
for (const e of errors) {
  console.error(`error: ${path}: ${e.path.join('.') || '(document)'}: ${e.message}`);
}
if (!document || errors.length > 0) process.exit(1);
console.log(`${path}: valid AsyncAPI ${document.version()}, ${document.allMessages().length} messages`);
