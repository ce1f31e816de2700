// Runs MicroPython's own interpreter (the WebAssembly port from the npm registry) for the firmware tests, driven
// by tests/firmware/micropython_wasm.py: one request per line on stdin, one JSON answer per line on stdout.
//   {"op": "boot", "files": {path: base64}, "keep": [dir, ...], "cwd": dir}
//       a new interpreter (fresh RAM: nothing of the last one's objects), with what was under the "keep"
//       directories of the last one's file system (its flash) and then the given files written in
//   {"op": "run", "code": text}        -> {"out": what it printed, "error": null | {"type", "message"}}
//   {"op": "read", "dir": dir}         -> {"files": {path: base64}} (every file under dir)
// node micropython_wasm.mjs <directory of the npm package>
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import path from "node:path";

const { loadMicroPython } = await import(pathToFileURL(path.join(process.argv[2], "micropython.mjs")).href);
let mp = null;
let out = [];

function walk(FS, dir, into) {
  let names;
  try { names = FS.readdir(dir); } catch { return into; }
  for (const name of names) {
    if (name === "." || name === "..") continue;
    const p = dir.replace(/\/$/, "") + "/" + name;
    if (FS.isDir(FS.stat(p).mode)) walk(FS, p, into);
    else into[p] = FS.readFile(p);  // Uint8Array
  }
  return into;
}

function write(FS, files) {
  for (const [p, data] of Object.entries(files)) {
    FS.mkdirTree(path.posix.dirname(p));
    FS.writeFile(p, data);
  }
}

async function boot(req) {
  const kept = {};
  if (mp) for (const dir of req.keep || []) walk(mp.FS, dir, kept);
  mp = await loadMicroPython({ stdout: (b) => out.push(...b), stderr: (b) => out.push(...b), linebuffer: false });
  write(mp.FS, kept);
  write(mp.FS, Object.fromEntries(Object.entries(req.files || {}).map(([p, b]) => [p, Buffer.from(b, "base64")])));
  if (req.cwd) mp.FS.mkdirTree(req.cwd);
  if (req.cwd) mp.runPython(`import os\nos.chdir(${JSON.stringify(req.cwd)})\ndel os`);
  return {};
}

function run(req) {
  out = [];
  let error = null;
  try {
    mp.runPython(req.code);
  } catch (e) {
    if (e.name !== "PythonError") throw e;
    error = { type: e.type, message: e.message };
  }
  return { out: Buffer.from(out).toString("utf8"), error };
}

function read(req) {
  const files = walk(mp.FS, req.dir, {});
  return { files: Object.fromEntries(Object.entries(files).map(([p, b]) => [p, Buffer.from(b).toString("base64")])) };
}

const ops = { boot, run, read };
for await (const line of createInterface({ input: process.stdin })) {
  let answer;
  try {
    const req = JSON.parse(line);
    answer = await ops[req.op](req);
  } catch (e) {
    answer = { fail: String(e && e.stack || e) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
