// The Grafana dashboards, proved against the Prometheus they read (Grafana cannot run here).
//
//   node --test tests/monitoring/        (scripts/test-monitoring.sh runs it)
//
// 1. Structure, offline: every dashboard under monitoring/grafana/dashboards/ has a fixed uid,
//    every panel, target and template variable names a provisioned datasource by its literal uid
//    (no ${DS_...} import variables), and every panel has a unit.
// 2. Prometheus, running: every target is up and every alert of the rule files is loaded.
// 3. Queries, against the running native stack: sends traffic through nginx (twice, so that
//    every counter has moved between two scrapes and rates are not zero), waits until Prometheus
//    has scraped it, resolves the template variables as Grafana would, substitutes Grafana's
//    $__ variables, and evaluates EVERY target of EVERY panel over the dashboard's time range:
//    each must return at least one series with a number (not only NaN) in it.
//
// Environment: PROMETHEUS_URL (else 127.0.0.1:PROMETHEUS_PORT), API_URL (else 127.0.0.1:PROXY_PORT;
// the ports' defaults are scripts/lib/defaults.sh's),
// GRAFANA_TIME_INTERVAL (else the datasource's timeInterval), GRAFANA_DATASOURCES: JSON
// {uid: type} of the provisioned datasources (test-monitoring.sh reads them from the YAML;
// without it, a line-based read of the provisioning files is used).
// No npm dependencies: Node 20's test runner and fetch.

import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { localUrl } from '../lib/defaults.mjs';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DASHBOARDS_DIR = join(ROOT, 'monitoring/grafana/dashboards');
const DATASOURCES_DIR = join(ROOT, 'monitoring/grafana/provisioning/datasources');
const RULES_DIR = join(ROOT, 'monitoring/prometheus/rules');

const PROMETHEUS = (process.env.PROMETHEUS_URL ?? localUrl('PROMETHEUS_PORT')).replace(/\/$/, '');
const API = (process.env.API_URL ?? localUrl('PROXY_PORT')).replace(/\/$/, '');
const SCRAPE_WAIT_SECONDS = 60;

// --- the files ------------------------------------------------------------------------------

const dashboards = readdirSync(DASHBOARDS_DIR)
  .filter((name) => name.endsWith('.json'))
  .sort()
  .map((name) => {
    const text = readFileSync(join(DASHBOARDS_DIR, name), 'utf8');
    return { file: name, text, json: JSON.parse(text) };
  });

function provisionedDatasources() {
  if (process.env.GRAFANA_DATASOURCES) return JSON.parse(process.env.GRAFANA_DATASOURCES);
  // Fallback without a YAML parser: `uid:` and `type:` lines of each datasource entry.
  const found = {};
  for (const name of readdirSync(DATASOURCES_DIR).filter((n) => /\.ya?ml$/.test(n))) {
    const entries = readFileSync(join(DATASOURCES_DIR, name), 'utf8').split(/^\s*- name:/m).slice(1);
    for (const entry of entries) {
      const uid = entry.match(/^\s*uid:\s*["']?([^"'\s#]+)/m)?.[1];
      const type = entry.match(/^\s*type:\s*["']?([^"'\s#]+)/m)?.[1];
      if (uid) found[uid] = type;
    }
  }
  return found;
}

/** Every panel, including those nested in collapsed rows. */
function allPanels(dashboard) {
  const out = [];
  const walk = (panels) => {
    for (const panel of panels ?? []) {
      out.push(panel);
      walk(panel.panels);
    }
  };
  walk(dashboard.panels);
  return out;
}

const queryPanels = (dashboard) => allPanels(dashboard).filter((panel) => panel.type !== 'row');

const durationSeconds = (text) => {
  const match = /^(\d+)(ms|s|m|h|d)$/.exec(text);
  assert.ok(match, `not a duration: ${text}`);
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[match[2]];
  return Number(match[1]) * unit;
};

// --- 1. structure ---------------------------------------------------------------------------

describe('dashboard files', () => {
  const datasources = provisionedDatasources();

  it('there is at least one dashboard and one provisioned datasource', () => {
    assert.ok(dashboards.length > 0, `no dashboards in ${DASHBOARDS_DIR}`);
    assert.ok(Object.keys(datasources).length > 0, `no datasource uids in ${DATASOURCES_DIR}`);
  });

  for (const { file, text, json: dashboard } of dashboards) {
    describe(file, () => {
      it('has a fixed uid, a title and a schema Grafana 10/11 reads', () => {
        assert.match(dashboard.uid ?? '', /^[A-Za-z0-9_-]{1,40}$/);
        assert.ok(dashboard.title);
        assert.ok(dashboard.schemaVersion >= 36 && dashboard.schemaVersion <= 41, `schemaVersion ${dashboard.schemaVersion}`);
        assert.ok(dashboard.id === null || dashboard.id === undefined, 'a provisioned dashboard must not carry a database id');
      });

      it('uses no ${DS_...} import variables', () => {
        assert.doesNotMatch(text, /\$\{?DS_/);
        assert.equal(dashboard.__inputs, undefined);
      });

      it('every panel, target and template variable names a provisioned datasource by uid', () => {
        const check = (where, ds) => {
          assert.ok(ds && typeof ds === 'object', `${where}: datasource must be {type, uid}, got ${JSON.stringify(ds)}`);
          assert.ok(ds.uid in datasources, `${where}: datasource uid ${ds.uid} is not provisioned (${Object.keys(datasources)})`);
          assert.equal(ds.type, datasources[ds.uid], `${where}: datasource type`);
        };
        for (const panel of allPanels(dashboard)) {
          check(`panel "${panel.title}"`, panel.datasource);
          for (const target of panel.targets ?? []) check(`panel "${panel.title}" target ${target.refId}`, target.datasource);
        }
        for (const variable of dashboard.templating?.list ?? []) {
          if (variable.type === 'query') check(`variable ${variable.name}`, variable.datasource);
        }
      });

      it('every panel has a unit, an id, a place and at least one query', () => {
        const ids = new Set();
        for (const panel of allPanels(dashboard)) {
          assert.ok(!ids.has(panel.id), `duplicate panel id ${panel.id}`);
          ids.add(panel.id);
          assert.ok(panel.gridPos && panel.gridPos.w > 0 && panel.gridPos.x + panel.gridPos.w <= 24, `panel "${panel.title}" gridPos`);
        }
        for (const panel of queryPanels(dashboard)) {
          const unit = panel.fieldConfig?.defaults?.unit;
          assert.ok(typeof unit === 'string' && unit.length > 0, `panel "${panel.title}" has no unit`);
          assert.ok((panel.targets ?? []).length > 0, `panel "${panel.title}" has no query`);
          const refIds = new Set();
          for (const target of panel.targets) {
            assert.ok(target.expr && target.expr.trim(), `panel "${panel.title}" target ${target.refId} has no expr`);
            assert.ok(!refIds.has(target.refId), `panel "${panel.title}" duplicate refId ${target.refId}`);
            refIds.add(target.refId);
          }
        }
      });
    });
  }
});

// --- Prometheus HTTP API ----------------------------------------------------------------------

/** Calls the HTTP API: queries by POST (as Grafana's datasource does), the rest by GET. */
async function prometheus(path, params = {}) {
  const post = /^\/api\/v1\/(query|query_range|series)$/.test(path);
  const form = new URLSearchParams(params);
  const response = await fetch(post ? `${PROMETHEUS}${path}` : `${PROMETHEUS}${path}?${form}`, {
    method: post ? 'POST' : 'GET',
    headers: post ? { 'content-type': 'application/x-www-form-urlencoded' } : {},
    body: post ? form : undefined,
    signal: AbortSignal.timeout(10_000),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok || body.status !== 'success') {
    throw new Error(`${path} ${JSON.stringify(params)}: HTTP ${response.status} ${body.errorType ?? ''} ${body.error ?? ''}`);
  }
  return body.data;
}

async function instantValue(query) {
  const data = await prometheus('/api/v1/query', { query });
  return data.result.length ? Number(data.result[0].value[1]) : NaN;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const JOBS = ['writer', 'reader', 'node'];

/** When Prometheus last scraped each job ({job: seconds}; a job never scraped is missing). */
async function lastScrapes() {
  const data = await prometheus('/api/v1/query', { query: `max by (job) (timestamp(up{job=~"${JOBS.join('|')}"}))` });
  return Object.fromEntries(data.result.map((s) => [s.metric.job, Number(s.value[1])]));
}

/**
 * Waits until Prometheus holds a scrape of every job that started after `afterSeconds` (so it
 * includes all traffic sent before then). Robust to a service restarting in between.
 */
async function waitForScrape(afterSeconds) {
  const deadline = Date.now() + SCRAPE_WAIT_SECONDS * 1000;
  for (;;) {
    const scraped = await lastScrapes();
    if (JOBS.every((job) => scraped[job] > afterSeconds)) return;
    if (Date.now() > deadline) {
      const { activeTargets } = await prometheus('/api/v1/targets', { state: 'active' });
      const state = activeTargets.map((t) => `${t.labels.job}: ${t.health} at ${t.lastScrape} ${t.lastError}`);
      throw new Error(`Prometheus has not scraped all targets since the traffic (${SCRAPE_WAIT_SECONDS}s): ${state.join('; ')}`);
    }
    await sleep(1000);
  }
}

// --- traffic through nginx --------------------------------------------------------------------

async function call(method, path, body, expected) {
  let response;
  let text;
  // 502/503 while a service restarts (the stack restarts a rebuilt binary): retry briefly.
  for (let attempt = 1; ; attempt += 1) {
    response = await fetch(`${API}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    text = await response.text();
    if (![502, 503].includes(response.status) || expected.includes(response.status) || attempt === 20) break;
    await sleep(500);
  }
  assert.ok(expected.includes(response.status), `${method} ${path}: expected ${expected}, got ${response.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

/** Writes and reads of a few accounts and transactions, plus answers that are 4xx on purpose. */
async function sendTraffic() {
  const transactions = [];
  const accounts = [randomUUID(), randomUUID(), randomUUID()];
  for (const account_id of accounts) {
    transactions.push(await call('POST', '/transactions', { account_id, amount: 100 }, [201]));
    transactions.push(await call('POST', '/transactions', { account_id, amount: -30 }, [201]));
  }
  for (const account_id of accounts) {
    await call('GET', `/accounts/${account_id}`, undefined, [200]);
    await call('GET', `/accounts/${account_id}`, undefined, [200]);
  }
  for (const { transaction_id } of transactions) await call('GET', `/transactions/${transaction_id}`, undefined, [200]);
  // 4xx: unknown ids (a cache miss, then PostgreSQL), malformed ids and bodies, unknown paths.
  await call('GET', `/accounts/${randomUUID()}`, undefined, [404]);
  await call('GET', `/transactions/${randomUUID()}`, undefined, [404]);
  await call('GET', '/accounts/not-a-uuid', undefined, [400]);
  await call('POST', '/transactions', { account_id: randomUUID() }, [400, 422]);
  await call('POST', '/transactions', '{"broken json', [400, 422]);
  await call('GET', '/no-such-path', undefined, [404]);
  await call('POST', '/no-such-path', {}, [404]);
}

// --- Grafana's variables ------------------------------------------------------------------------

const regexEscape = (value) => value.replace(/[\\^$*+?.()|{}[\]]/g, '\\\\$&');

/** What Grafana puts into a query for a variable (its regex formatting, as Prometheus gets it). */
function formatVariable(values) {
  return values.length === 1 ? regexEscape(values[0]) : `(${values.map(regexEscape).join('|')})`;
}

function substitute(expr, builtins, variables) {
  let out = expr;
  for (const [name, value] of Object.entries(builtins)) {
    out = out.replaceAll(`\${${name}}`, value);
  }
  // Longest names first, so $__interval does not eat the front of $__interval_ms.
  for (const name of Object.keys(builtins).sort((a, b) => b.length - a.length)) {
    out = out.replace(new RegExp(`\\$${name}\\b`, 'g'), builtins[name]);
  }
  for (const name of Object.keys(variables).sort((a, b) => b.length - a.length)) {
    const value = variables[name];
    out = out
      .replace(new RegExp(`\\$\\{${name}(:[a-z]+)?\\}`, 'g'), value)
      .replace(new RegExp(`\\[\\[${name}(:[a-z]+)?\\]\\]`, 'g'), value)
      .replace(new RegExp(`\\$${name}\\b`, 'g'), value);
  }
  const left = /\$\{?\w+|\[\[\w+\]\]/.exec(out);
  if (left) throw new Error(`unresolved variable ${left[0]} in: ${out}`);
  return out;
}

/** Grafana's $__interval and $__rate_interval for a time range (max data points ~1000). */
function grafanaIntervals(rangeSeconds, minIntervalSeconds) {
  const interval = Math.max(minIntervalSeconds, Math.ceil(rangeSeconds / 1000));
  const rateInterval = Math.max(interval + minIntervalSeconds, 4 * minIntervalSeconds);
  return {
    interval,
    builtins: {
      __rate_interval_ms: String(rateInterval * 1000),
      __rate_interval: `${rateInterval}s`,
      __interval_ms: String(interval * 1000),
      __interval: `${interval}s`,
      __range_ms: String(rangeSeconds * 1000),
      __range_s: String(rangeSeconds),
      __range: `${rangeSeconds}s`,
    },
  };
}

function timeRange(dashboard) {
  const from = dashboard.time?.from ?? 'now-6h';
  const match = /^now-(\d+[smhd])$/.exec(from);
  assert.ok(match && (dashboard.time?.to ?? 'now') === 'now', `unsupported time range ${JSON.stringify(dashboard.time)}`);
  return durationSeconds(match[1]);
}

/** Resolves the dashboard's query variables in order, as "All" (or the first value). */
async function resolveVariables(dashboard, builtins, start, end) {
  const values = {};
  for (const variable of dashboard.templating?.list ?? []) {
    if (variable.type === 'constant' || variable.type === 'custom') {
      const options = String(variable.query).split(',').map((v) => v.trim()).filter(Boolean);
      values[variable.name] = variable.includeAll ? variable.allValue ?? formatVariable(options) : formatVariable(options.slice(0, 1));
      continue;
    }
    if (variable.type === 'interval') {
      values[variable.name] = String(variable.query).split(',')[0].trim();
      continue;
    }
    if (variable.type !== 'query') throw new Error(`variable ${variable.name}: type ${variable.type} is not handled by this test`);
    const definition = typeof variable.query === 'string' ? variable.query : variable.query?.query ?? variable.definition;
    const match = /^label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)$/.exec(definition.trim());
    if (!match) throw new Error(`variable ${variable.name}: only label_values(...) is handled, got ${definition}`);
    const [, selector, label] = match;
    let found;
    if (selector) {
      const series = await prometheus('/api/v1/series', { 'match[]': substitute(selector, builtins, values), start, end });
      found = [...new Set(series.map((labels) => labels[label]).filter((v) => v !== undefined))];
    } else {
      found = await prometheus(`/api/v1/label/${label}/values`, { start, end });
    }
    if (variable.regex) found = found.filter((v) => new RegExp(variable.regex.replace(/^\/|\/$/g, '')).test(v));
    found.sort();
    assert.ok(found.length > 0, `variable ${variable.name} (${definition}) has no values`);
    values[variable.name] = variable.includeAll
      ? variable.allValue || formatVariable(found)
      : formatVariable(found.slice(0, 1));
  }
  return values;
}

const hasNumber = (samples) => samples.some(([, value]) => !Number.isNaN(Number(value)));

// --- 2. Prometheus itself -------------------------------------------------------------------------

describe('the running Prometheus', () => {
  it('every scrape target is up', async () => {
    // A Prometheus that has just started needs up to a scrape interval to reach every target.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const { activeTargets } = await prometheus('/api/v1/targets', { state: 'active' });
      const jobs = new Set(activeTargets.map((target) => target.labels.job));
      const problems = [
        ...JOBS.filter((job) => !jobs.has(job)).map((job) => `no ${job} target`),
        ...activeTargets
          .filter((target) => target.health !== 'up')
          .map((t) => `${t.labels.job} ${t.scrapeUrl}: ${t.health} ${t.lastError}`),
      ];
      if (problems.length === 0) return;
      if (Date.now() > deadline) assert.deepEqual(problems, []);
      await sleep(1000);
    }
  });

  it('Prometheus loaded every alert of the rule files', async () => {
    const expected = new Set();
    for (const name of readdirSync(RULES_DIR).filter((n) => /\.ya?ml$/.test(n))) {
      for (const match of readFileSync(join(RULES_DIR, name), 'utf8').matchAll(/^\s*-\s*alert:\s*(\S+)/gm)) expected.add(match[1]);
    }
    const { groups } = await prometheus('/api/v1/rules', { type: 'alert' });
    const loaded = new Set(groups.flatMap((group) => group.rules.map((rule) => rule.name)));
    assert.deepEqual([...loaded].sort(), [...expected].sort());
    const broken = groups.flatMap((group) => group.rules).filter((rule) => rule.health === 'err');
    assert.deepEqual(broken.map((rule) => `${rule.name}: ${rule.lastError}`), []);
  });
});

// --- 3. queries ---------------------------------------------------------------------------------

describe('dashboard queries return data from the running Prometheus', () => {
  // The datasource's timeInterval (Prometheus' scrape interval): Grafana's floor for
  // $__interval and the base of $__rate_interval. Grafana's default is 15s.
  const scrapeInterval = durationSeconds(
    process.env.GRAFANA_TIME_INTERVAL ??
      readFileSync(join(DATASOURCES_DIR, 'prometheus.yml'), 'utf8').match(/timeInterval:\s*["']?(\w+)/)?.[1] ??
      '15s',
  );
  const contexts = new Map();

  before(async () => {
    const ready = await fetch(`${PROMETHEUS}/-/ready`, { signal: AbortSignal.timeout(5_000) }).catch((error) => error);
    assert.ok(ready.ok, `Prometheus is not ready at ${PROMETHEUS} (bash scripts/monitoring.sh start)`);
    // Twice: the first round creates any series that did not exist yet, the second moves them
    // while Prometheus watches, so every rate() has two differing samples.
    for (const round of [1, 2]) {
      const started = Date.now();
      await sendTraffic();
      const sent = Date.now() / 1000;
      await waitForScrape(sent);
      console.log(`# traffic round ${round}: sent in ${(sent - started / 1000).toFixed(1)}s, scraped ${(Date.now() / 1000 - sent).toFixed(1)}s later`);
    }
    const end = Date.now() / 1000;
    for (const { file, json: dashboard } of dashboards) {
      const rangeSeconds = timeRange(dashboard);
      const { interval, builtins } = grafanaIntervals(rangeSeconds, scrapeInterval);
      const start = end - rangeSeconds;
      const variables = await resolveVariables(dashboard, builtins, start, end);
      console.log(`# ${file}: range ${rangeSeconds}s, step ${interval}s, ${JSON.stringify(builtins)}, variables ${JSON.stringify(variables)}`);
      contexts.set(file, { builtins, variables, start, end, step: interval });
    }
  });

  for (const { file, json: dashboard } of dashboards) {
    for (const panel of queryPanels(dashboard)) {
      for (const target of panel.targets ?? []) {
        if (target.hide) continue;
        it(`${file} › ${panel.title} › ${target.refId} (${target.legendFormat ?? ''})`, async () => {
          const { builtins, variables, start, end, step } = contexts.get(file);
          const query = substitute(target.expr, builtins, variables);
          let series;
          if (target.instant && !target.range) {
            const data = await prometheus('/api/v1/query', { query, time: end });
            series = data.result.map((s) => ({ metric: s.metric, values: [s.value] }));
          } else {
            const data = await prometheus('/api/v1/query_range', { query, start, end, step });
            series = data.result;
          }
          const withData = series.filter((s) => hasNumber(s.values));
          assert.ok(
            withData.length > 0,
            `no data (${series.length} series, all empty or NaN) for:\n${query}`,
          );
        });
      }
    }
  }
});
