// Every repository path the documentation names exists. Reads README.md, docs/*.md,
// bench/README.md, tests/README.md (and any README.md under writer/, reader/, shared/), takes
// the paths from backticked spans and Markdown links, and fails naming the document, the line
// and each path that is not in the checkout. Runs in scripts/check-containers.sh with the rest
// of tests/ops/ (node --test tests/ops/); alone: node --test tests/ops/doc-paths.test.mjs.
//
// What counts as a repository path:
//   - a word of a backticked span (`bash scripts/soak.sh` gives scripts/soak.sh) whose first
//     segment is an entry at the top of the repository (shared/, scripts/, docs/, README.md,
//     .github/, ...) and that either has a '/' or is that top-level file itself. Backticked
//     paths are read from the repository's root, wherever the document lives, as the docs
//     write them; in a document below the root, a word that starts with an entry of the
//     document's own folder is read from there (bench/README.md's `lua/write.lua`). Other
//     relative mentions, such as the README's `lib/` or `compose/`, are not checked.
//   - the target of a Markdown link [text](target) that is not a URL, resolved against the
//     document's folder (an #anchor is dropped). A link is a path by construction, so any
//     target inside the repository is checked, whatever its first segment.
// What does not: URLs, globs (* ? [ ]), placeholders (<...>, {id}, run-N, ...), and runtime
// paths, which are whatever .gitignore ignores (.stack/ state folders, target/,
// node_modules/, bench/results/tmp/, .env) plus absolute and home paths (/var/..., ~/.cache),
// which never start with a top-level entry. Fenced code blocks are skipped: they hold
// commands' output and shell sessions, not references.

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

// --- what the checkout holds ----------------------------------------------------------------

/** .gitignore's simple patterns (`dir/`, `*.ext`, `name`) as a predicate on repo paths. */
export function ignoredBy(gitignoreText) {
  const rules = gitignoreText
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#") && !l.startsWith("!"));
  return (repoPath) => {
    const p = repoPath.replace(/^\/+/, "");
    const segments = p.split("/").filter(Boolean);
    return rules.some((rule) => {
      if (rule.startsWith("*.")) return p.endsWith(rule.slice(1));
      const r = rule.replace(/^\//, "");
      if (r.endsWith("/")) {
        const dir = r.slice(0, -1);
        // anchored when it has an inner '/', else a folder of that name at any depth
        if (dir.includes("/")) return p === dir || p.startsWith(`${dir}/`);
        return segments.slice(0, -1).includes(dir) || (p.endsWith("/") && segments.includes(dir));
      }
      return r.includes("/") ? p === r || p.startsWith(`${r}/`) : segments.includes(r);
    });
  };
}

const isIgnored = ignoredBy(existsSync(path.join(ROOT, ".gitignore")) ? readFileSync(path.join(ROOT, ".gitignore"), "utf8") : "");

/** Names at the top of the repository that a path may start with (runtime folders excluded). */
export const TOP_LEVEL = new Set(
  readdirSync(ROOT).filter((name) => name !== ".git" && !isIgnored(name) && !isIgnored(`${name}/`)),
);

// --- extraction -----------------------------------------------------------------------------

/** The text with fenced code blocks blanked (newlines kept, so offsets map to the same lines). */
function withoutFences(text) {
  return text.replace(/^(\s*)(```|~~~)[^\n]*\n[\s\S]*?^\s*\2[^\n]*$/gm, (block) => block.replace(/[^\n]/g, " "));
}

function lineAt(text, offset) {
  let line = 1;
  for (let i = 0; i < offset; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

const PLACEHOLDER = /[<>{}$]|…|\.\.\.|(^|[-_/])(N|K|NAME|STATE)([-_./]|$)/;
const GLOB = /[*?[\]]/;

/** A word that names something under the repository root, cleaned of punctuation; or null. */
export function repoPathOf(word, topLevel = TOP_LEVEL) {
  let w = word
    .replace(/^[("'=]+/, "")
    .replace(/[)"',;.:]+$/, "")
    .replace(/:\d+(-\d+)?$/, "") // file.rs:42
    .replace(/#.*$/, "");
  if (!w || /^[a-z][a-z0-9+.-]*:\/\//i.test(w) || w.startsWith("/") || w.startsWith("~")) return null;
  w = w.replace(/^\.\//, "");
  if (GLOB.test(w) || PLACEHOLDER.test(w)) return null;
  const first = w.split("/")[0];
  if (!topLevel.has(first)) return null;
  if (!w.includes("/") && !/\.[A-Za-z0-9]+$/.test(w)) return null; // a bare word like `bench`
  if (isIgnored(w)) return null;
  return w;
}

/** The entries of a document's folder (other than the root), for paths written from there. */
function entriesBeside(docPath) {
  const dir = path.posix.dirname(docPath);
  if (dir === "." || !existsSync(path.join(ROOT, dir))) return null;
  return new Set(readdirSync(path.join(ROOT, dir)).filter((name) => !isIgnored(`${dir}/${name}/`)));
}

/**
 * Every path a Markdown document names: [{ line, path, from }], `path` relative to the repo
 * root. `docPath` is the document's own path relative to the root (for relative links).
 */
export function pathsIn(text, docPath, topLevel = TOP_LEVEL, localEntries = entriesBeside(docPath)) {
  const found = [];
  const body = withoutFences(text);
  const docDir = path.posix.dirname(docPath);

  for (const m of body.matchAll(/(`+)([^`]+?)\1/g)) {
    for (const word of m[2].split(/\s+/)) {
      let p = repoPathOf(word, topLevel);
      // bench/README.md's `lua/write.lua`: a path into the document's own folder
      if (!p && docDir !== "." && localEntries) {
        const local = repoPathOf(word, localEntries);
        if (local && !isIgnored(path.posix.join(docDir, local))) p = path.posix.join(docDir, local);
      }
      if (p) found.push({ line: lineAt(body, m.index), path: p.replace(/\/$/, ""), from: `\`${m[2].trim()}\`` });
    }
  }

  for (const m of body.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
    const target = m[1];
    if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith("#")) continue; // URL, mailto:, anchor
    const resolved = path.posix.normalize(path.posix.join(docDir, target.replace(/#.*$/, "")));
    if (resolved.startsWith("..") || resolved === "." || GLOB.test(resolved) || PLACEHOLDER.test(resolved)) continue;
    if (isIgnored(resolved)) continue;
    found.push({ line: lineAt(body, m.index), path: resolved.replace(/\/$/, ""), from: `(${target})` });
  }
  return found;
}

/** The missing ones, as "doc:line: path (from ...)". */
export function missingPaths(text, docPath, exists = (p) => existsSync(path.join(ROOT, p)), topLevel = TOP_LEVEL) {
  return pathsIn(text, docPath, topLevel)
    .filter(({ path: p }) => !exists(p))
    .map(({ line, path: p, from }) => `${docPath}:${line}: ${p} does not exist (from ${from})`);
}

// --- the documents --------------------------------------------------------------------------

export function documents() {
  const docs = ["README.md", "bench/README.md", "tests/README.md"];
  for (const name of readdirSync(path.join(ROOT, "docs")).sort()) if (name.endsWith(".md")) docs.push(`docs/${name}`);
  for (const dir of ["writer", "reader", "shared"]) if (existsSync(path.join(ROOT, dir, "README.md"))) docs.push(`${dir}/README.md`);
  return docs.filter((d) => existsSync(path.join(ROOT, d)));
}

// --- the tests ------------------------------------------------------------------------------

describe("the extraction", () => {
  const top = new Set(["shared", "scripts", "docs", "README.md", "bench", "tests", ".github"]);

  test("finds backticked and linked paths and names the line of each", () => {
    const doc = [
      "# Title",
      "Run `bash scripts/soak.sh` and read `shared/src/lib.rs:12`,",
      "see [the decisions](decisions.md#8-libraries) and [`README.md`](../README.md).",
      "```sh",
      "cat scripts/in-a-fence.sh",
      "```",
      "`.github/workflows/`",
    ].join("\n");
    assert.deepEqual(
      pathsIn(doc, "docs/x.md", top).map(({ line, path: p }) => `${line} ${p}`),
      ["2 scripts/soak.sh", "2 shared/src/lib.rs", "3 README.md", "7 .github/workflows", "3 docs/decisions.md", "3 README.md"],
    );
  });

  test("ignores URLs, globs, placeholders, runtime and relative mentions", () => {
    const doc = [
      "`https://example.com/docs/x.md` [site](https://example.com/a) `shared/migrations/*.sql`",
      "`bench/results/run-N.json` `tests/<kind>/` `docs/{name}.md` `scripts/…` `STATE/sockets/`",
      "`.stack/logs/x.log` `/var/lib/postgresql` `~/.cache/x` `lib/` `compose/` `GET /accounts/{id}`",
      "`target/release/reader` `node_modules/.bin/dclint` `bench/results/tmp/` [up](../../outside.md)",
    ].join("\n");
    assert.deepEqual(pathsIn(doc, "docs/x.md", top), []);
  });

  test("fails on a path that does not exist, naming the document, line and path", () => {
    const doc = "Intro.\n\nThe tests live in `tests/api/` and `docs/nope.md`; [bad](missing.md).\n";
    const exists = (p) => p === "docs";
    assert.deepEqual(missingPaths(doc, "docs/x.md", exists, top), [
      "docs/x.md:3: tests/api does not exist (from `tests/api/`)",
      "docs/x.md:3: docs/nope.md does not exist (from `docs/nope.md`)",
      "docs/x.md:3: docs/missing.md does not exist (from (missing.md))",
    ]);
  });
});

describe("the documentation", () => {
  const docs = documents();

  test("the documents to check are found", () => {
    assert.ok(docs.includes("README.md") && docs.some((d) => d.startsWith("docs/")), docs.join(", "));
  });

  for (const doc of docs) {
    test(`every repository path ${doc} names exists`, () => {
      const text = readFileSync(path.join(ROOT, doc), "utf8");
      assert.ok(pathsIn(text, doc).length > 0 || doc !== "README.md", "README.md names no path: the extraction is broken");
      const missing = missingPaths(text, doc);
      assert.deepEqual(missing, [], `${doc} names paths that do not exist:\n  ${missing.join("\n  ")}`);
    });
  }
});
