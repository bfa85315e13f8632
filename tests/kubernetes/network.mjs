// NetworkPolicy semantics, enough to ask "may this pod connect to that pod on this port?" of
// the rendered policies: a pod selected by no policy of a direction is open in that
// direction; a selected pod admits only what some rule of a selecting policy allows. Only the
// forms the manifests use are understood (podSelector, namespaceSelector, ports by number);
// anything else throws, so a new form cannot make the test pass by being ignored.
import { selects } from "./render.mjs";

/** A pod, as far as policies see it. */
export const pod = (namespace, labels) => ({ namespace, labels, nsLabels: { "kubernetes.io/metadata.name": namespace } });

function peerMatches(peer, policyNs, other) {
  const keys = Object.keys(peer);
  if (keys.some((k) => !["podSelector", "namespaceSelector"].includes(k))) {
    throw new Error(`unsupported peer: ${JSON.stringify(peer)}`);
  }
  const nsOk = peer.namespaceSelector
    ? selects(peer.namespaceSelector, other.nsLabels) || isEmpty(peer.namespaceSelector)
    : other.namespace === policyNs;
  const podOk = peer.podSelector ? selects(peer.podSelector, other.labels) || isEmpty(peer.podSelector) : true;
  return nsOk && podOk;
}

const isEmpty = (selector) =>
  Object.keys(selector.matchLabels ?? {}).length === 0 && !(selector.matchExpressions?.length);

function portMatches(ports, port) {
  if (!ports || ports.length === 0) return true;
  return ports.some((p) => {
    if (typeof p.port !== "number") throw new Error(`unsupported port (named?): ${JSON.stringify(p)}`);
    return p.port === port && (p.protocol ?? "TCP") === "TCP";
  });
}

function types(policy) {
  return policy.spec.policyTypes ?? (policy.spec.egress ? ["Ingress", "Egress"] : ["Ingress"]);
}

/** Does `direction` (Ingress of `target`, Egress of `source`) allow source -> target:port? */
function allowedOneWay(policies, direction, subject, other, port) {
  const applying = policies.filter(
    (p) =>
      p.metadata.namespace === subject.namespace &&
      types(p).includes(direction) &&
      (isEmpty(p.spec.podSelector) || selects(p.spec.podSelector, subject.labels)),
  );
  if (applying.length === 0) return true;
  const key = direction === "Ingress" ? "ingress" : "egress";
  const peersKey = direction === "Ingress" ? "from" : "to";
  return applying.some((p) =>
    (p.spec[key] ?? []).some((rule) => {
      if (rule.ipBlock) throw new Error("ipBlock rules are not supported by this test");
      const peers = rule[peersKey];
      const peerOk = !peers || peers.length === 0 || peers.some((peer) => peerMatches(peer, p.metadata.namespace, other));
      return peerOk && portMatches(rule.ports, port);
    }),
  );
}

/** May `source` open a TCP connection to `target` on `port`? Both directions must allow it. */
export function mayConnect(policies, source, target, port) {
  return (
    allowedOneWay(policies, "Egress", source, target, port) &&
    allowedOneWay(policies, "Ingress", target, source, port)
  );
}
