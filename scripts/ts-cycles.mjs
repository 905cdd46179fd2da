#!/usr/bin/env node
// Fails when the TypeScript sources import each other in a circle.
//
//   node scripts/ts-cycles.mjs [root=src]
//
// Reads every .ts/.tsx file under the root, takes the relative module
// specifiers of its `import ... from`, `import type ... from`, `export ...
// from`, side-effect `import '...'`, dynamic `import('...')` and `require()`,
// resolves them like TypeScript does (file.ts, file.tsx, file/index.ts(x)),
// and prints every strongly connected component of more than one file (or a
// file that imports itself) with one circle through it. Type-only imports
// count: a circle of types is still a circle to read. Exit status 1 when
// there is any, else 0.
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(process.argv[2] ?? 'src');
const EXTENSIONS = ['.ts', '.tsx'];

function walk(dir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules') {
        out.push(...walk(full));
      }
    } else if (
      EXTENSIONS.some(ext => entry.name.endsWith(ext)) &&
      !entry.name.endsWith('.d.ts')
    ) {
      out.push(full);
    }
  }
  return out;
}

function stripComments(text) {
  // Good enough for module specifiers: drop block and line comments that are
  // not inside a string (specifiers never contain `//` or `/*`).
  return text
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/(^|[^:'"`\\])\/\/.*$/gm, '$1');
}

const SPECIFIER = [
  /\bimport\s+(?:type\s+)?[\w*{}\s,$]*?\bfrom\s*['"]([^'"]+)['"]/g,
  /\bexport\s+(?:type\s+)?(?:\*(?:\s+as\s+\w+)?|\{[^}]*\})\s*from\s*['"]([^'"]+)['"]/g,
  /\bimport\s*['"]([^'"]+)['"]/g,
  /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
  /\brequire\s*\(\s*['"]([^'"]+)['"]\s*\)/g
];

function specifiers(text) {
  const found = new Set();
  const code = stripComments(text);
  for (const re of SPECIFIER) {
    for (const match of code.matchAll(re)) {
      found.add(match[1]);
    }
  }
  return [...found];
}

function resolve(from, spec) {
  if (!spec.startsWith('.')) {
    return null;
  }
  const base = path.resolve(path.dirname(from), spec);
  const candidates = [
    base,
    ...EXTENSIONS.map(ext => base + ext),
    ...EXTENSIONS.map(ext => path.join(base, 'index' + ext))
  ];
  for (const candidate of candidates) {
    if (
      EXTENSIONS.some(ext => candidate.endsWith(ext)) &&
      fs.existsSync(candidate) &&
      fs.statSync(candidate).isFile()
    ) {
      return candidate;
    }
  }
  return null;
}

const files = walk(root).sort();
const graph = new Map();
for (const file of files) {
  const deps = new Set();
  for (const spec of specifiers(fs.readFileSync(file, 'utf8'))) {
    const target = resolve(file, spec);
    if (target) {
      deps.add(target);
    }
  }
  graph.set(file, [...deps].sort());
}

// Tarjan's strongly connected components (iterative).
let counter = 0;
const index = new Map();
const low = new Map();
const onStack = new Set();
const stack = [];
const components = [];
for (const start of files) {
  if (index.has(start)) {
    continue;
  }
  const work = [[start, 0]];
  index.set(start, counter);
  low.set(start, counter++);
  stack.push(start);
  onStack.add(start);
  while (work.length) {
    const frame = work[work.length - 1];
    const [node, i] = frame;
    const deps = graph.get(node) ?? [];
    if (i < deps.length) {
      frame[1] += 1;
      const dep = deps[i];
      if (!index.has(dep)) {
        index.set(dep, counter);
        low.set(dep, counter++);
        stack.push(dep);
        onStack.add(dep);
        work.push([dep, 0]);
      } else if (onStack.has(dep)) {
        low.set(node, Math.min(low.get(node), index.get(dep)));
      }
    } else {
      work.pop();
      if (work.length) {
        const parent = work[work.length - 1][0];
        low.set(parent, Math.min(low.get(parent), low.get(node)));
      }
      if (low.get(node) === index.get(node)) {
        const component = [];
        let member;
        do {
          member = stack.pop();
          onStack.delete(member);
          component.push(member);
        } while (member !== node);
        const selfLoop = (graph.get(node) ?? []).includes(node);
        if (component.length > 1 || selfLoop) {
          components.push(component.sort());
        }
      }
    }
  }
}

// One circle through each component, for the message.
function circleIn(component) {
  const members = new Set(component);
  const first = component[0];
  const previous = new Map([[first, null]]);
  const queue = [first];
  while (queue.length) {
    const node = queue.shift();
    for (const dep of graph.get(node) ?? []) {
      if (!members.has(dep)) {
        continue;
      }
      if (dep === first) {
        const circle = [first];
        for (let at = node; at !== first; at = previous.get(at)) {
          circle.splice(1, 0, at);
        }
        circle.push(first);
        return circle;
      }
      if (!previous.has(dep)) {
        previous.set(dep, node);
        queue.push(dep);
      }
    }
  }
  return component;
}

const rel = file => path.relative(process.cwd(), file);
if (components.length) {
  console.error(
    `ts-cycles: ${components.length} import circle(s) under ${rel(root) || '.'}:`
  );
  for (const component of components) {
    console.error(`  ${circleIn(component).map(rel).join(' -> ')}`);
    if (component.length > 2) {
      console.error(
        `    (files in this circle: ${component.map(rel).join(', ')})`
      );
    }
  }
  process.exit(1);
}
console.log(
  `ts-cycles: no import circle among ${files.length} files under ${rel(root) || '.'}.`
);
