// Builds dist/: bundled, minified scripts and styles, the pages, and a gzip
// copy of each (level 9, no timestamp) that the relay serves as is. The output
// is deterministic: CI rebuilds it and fails when it differs from the commit.
import { build } from 'esbuild';
import { gzipSync, constants } from 'node:zlib';
import { mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';

const src = new URL('./src/', import.meta.url);
const dist = new URL('./dist/', import.meta.url);
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);

const common = {
  bundle: true,
  minify: true,
  target: ['es2022'],
  legalComments: 'eof',
  charset: 'utf8',
  logLevel: 'warning',
  write: false,
};
const outputs = [];
for (const [entry, out, format] of [
  ['main.js', 'app.js', 'esm'],
  ['status.js', 'status.js', 'esm'],
  ['kdf-worker.js', 'kdf-worker.js', 'iife'],
  ['app.css', 'app.css', undefined],
]) {
  const r = await build({ ...common, entryPoints: [new URL(entry, src).pathname], format, outfile: out });
  outputs.push([out, r.outputFiles[0].contents]);
}
for (const page of ['index.html', 'status.html', 'icon.svg']) {
  // Indentation and blank lines are all there is to strip from the hand-written files.
  const text = readFileSync(new URL(page, src), 'utf8').split('\n').map((l) => l.trim()).filter(Boolean).join('\n');
  outputs.push([page, Buffer.from(`${text}\n`)]);
}

let raw = 0;
let gz = 0;
const lines = [];
for (const [name, bytes] of outputs) {
  const zipped = gzipSync(bytes, { level: constants.Z_BEST_COMPRESSION });
  writeFileSync(new URL(name, dist), bytes);
  writeFileSync(new URL(`${name}.gz`, dist), zipped);
  lines.push(`${name.padEnd(16)} ${String(bytes.length).padStart(7)} ${String(zipped.length).padStart(7)}`);
  if (!['status.html', 'status.js', 'kdf-worker.js'].includes(name)) {
    raw += bytes.length;
    gz += zipped.length;
  }
}
lines.push(`first load (index.html, app.css, app.js, icon.svg): ${raw} bytes, ${gz} gzipped`);
writeFileSync(new URL('SIZES.txt', dist), `file               bytes    gzip\n${lines.join('\n')}\n`);
console.log(readFileSync(new URL('SIZES.txt', dist), 'utf8'));
if (gz > 40 * 1024) {
  console.error(`first load is ${gz} gzipped bytes, over the 40 KB budget`);
  process.exit(1);
}
