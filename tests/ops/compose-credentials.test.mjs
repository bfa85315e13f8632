// Least privilege in docker compose (issue 21): no default or shared password, the roles of
// scripts/sql/roles.sql provisioned before the writer, Redis with ACL users and its default
// user off. Checked on the files, without a Docker engine (as compose.test.mjs).

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { ROOT, read, compose, services, variables, environmentOf, hostPathOf, dependsOn, healthTest } from "./compose-model.mjs";

// What compose says when .env lacks a password.
const REQUIRED = "run scripts/compose-env.sh";

describe("credentials", () => {
  test("db-roles runs scripts/sql/roles.sql as the superuser before the writer, which migrates as the owner", () => {
    const env = environmentOf("postgres");
    assert.equal(environmentOf("db-roles").POSTGRES_PASSWORD, env.POSTGRES_PASSWORD);
    assert.equal(path.resolve(ROOT, hostPathOf("db-roles", "/ledger/roles.sql") ?? ""), path.join(ROOT, "scripts/sql/roles.sql"));
    assert.equal(dependsOn("writer")["db-roles"], "service_completed_successfully");
    assert.equal(
      environmentOf("writer").MIGRATION_DATABASE_URL,
      `postgres://ledger_owner:\${LEDGER_OWNER_PASSWORD:?${REQUIRED}}@postgres:5432/transactions`,
    );
    assert.equal(environmentOf("reader").MIGRATION_DATABASE_URL, undefined, "the reader never migrates");
  });

  test("no default or shared password: each is required from .env, and scripts/compose-env.sh makes each", () => {
    const passwords = [...new Set(variables(compose).map(([name]) => name).filter((name) => name.endsWith("_PASSWORD")))].sort();
    assert.ok(passwords.length >= 7, passwords.join(", "));
    const generated = read("scripts/lib/roles.sh").match(/^COMPOSE_PASSWORDS="([^"]*)"/m)?.[1] ?? "";
    for (const name of passwords) {
      for (const [used, fallback] of variables(compose).filter(([used]) => used === name)) {
        assert.equal(fallback, undefined, `${used} has a default`);
      }
      assert.match(read(".env.example"), new RegExp(`^${name}=$`, "m"), `.env.example must leave ${name} empty`);
      assert.match(generated, new RegExp(`\\b${name}\\b`), `COMPOSE_PASSWORDS (scripts/lib/roles.sh) lacks ${name}`);
    }
    assert.ok(!JSON.stringify(compose).includes(":-postgres}"), "a default password is left");
  });

  test("Redis: the default user off, ACL users for writer and reader from scripts/lib/roles.sh", () => {
    const entrypoint = [].concat(services.redis.entrypoint ?? []).join(" ");
    assert.match(entrypoint, /\/ledger\/redis-acl\.sh/);
    assert.equal(path.resolve(ROOT, hostPathOf("redis", "/ledger/roles.sh") ?? ""), path.join(ROOT, "scripts/lib/roles.sh"));
    const script = read("docker/redis-acl.sh");
    assert.match(script, /--user default off/);
    for (const kind of ["writer", "reader"]) assert.match(script, new RegExp(`redis_acl_rules ${kind}`));
    assert.match(healthTest("redis"), /--user ledger-reader-tm-/);
  });
});
