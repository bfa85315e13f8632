// A client of the change feeds (GET /events, GET /accounts/{account_id}/events) for the tests:
// one open Server-Sent Events stream, its events parsed as they arrive. Used by tests/feed/ and
// by the fault tests (tests/faults/redis.test.mjs: resuming across a Redis restart).

import assert from 'node:assert/strict';

/** Generous: a loaded 2-core machine. */
export const WAIT_MS = 20_000;

/** One open feed: its events as they arrive, parsed. */
export class Feed {
  /** Opens `href` (a whole URL), resuming after `lastEventId` when given. */
  static async open(href, { lastEventId, headers = {} } = {}) {
    const controller = new AbortController();
    const res = await fetch(href, {
      headers: {
        accept: 'text/event-stream',
        ...(lastEventId === undefined ? {} : { 'last-event-id': String(lastEventId) }),
        ...headers,
      },
      signal: controller.signal,
    });
    return new Feed(res, controller);
  }

  constructor(res, controller) {
    this.res = res;
    this.controller = controller;
    this.reader = res.body?.getReader();
    this.decoder = new TextDecoder();
    this.buffer = '';
    this.comments = [];
  }

  /** The next event ({ id, event, data }), or undefined when the stream ends. */
  async next(timeoutMs = WAIT_MS) {
    for (;;) {
      const end = this.buffer.indexOf('\n\n');
      if (end >= 0) {
        const block = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + 2);
        const event = { id: undefined, event: '', data: '' };
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) this.comments.push(line.slice(1).trim());
          else if (line.startsWith('id: ')) event.id = Number(line.slice(4));
          else if (line.startsWith('event: ')) event.event = line.slice(7);
          else if (line.startsWith('data: ')) event.data += line.slice(6);
        }
        if (!event.event) continue;
        event.data = JSON.parse(event.data);
        return event;
      }
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no event within ${timeoutMs} ms`)), timeoutMs);
      });
      let chunk;
      try {
        chunk = await Promise.race([this.reader.read(), timeout]);
      } catch (error) {
        if (error.name === 'AbortError' || error.name === 'TypeError') return undefined;
        throw error;
      } finally {
        clearTimeout(timer);
      }
      if (chunk.done) return undefined;
      this.buffer += this.decoder.decode(chunk.value, { stream: true });
    }
  }

  /** The next `n` transaction events. */
  async take(n) {
    const events = [];
    while (events.length < n) {
      const event = await this.next();
      assert.ok(event, `the feed ended after ${events.length} of ${n} events`);
      assert.equal(event.event, 'transaction', JSON.stringify(event));
      events.push(event);
    }
    return events;
  }

  close() {
    this.controller.abort();
  }
}
