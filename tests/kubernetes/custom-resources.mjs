// The fields this project sets on custom resources, written down here from the operators'
// API references (CloudNativePG 1.25+: postgresql.cnpg.io/v1 Cluster; Prometheus Operator:
// monitoring.coreos.com/v1 ServiceMonitor), with their types. kubernetes-validate bundles no
// schema for custom kinds, so this list is what catches a misspelt or mistyped field. It is
// deliberately not the operators' full schema (none is copied into the repository): a field
// not listed here fails the test until someone checks it against the reference and adds it.

// --- a tiny type language ----------------------------------------------------------------------

const str = { type: "string" };
const int = { type: "integer" };
const bool = { type: "boolean" };
const oneOf = (...values) => ({ type: "enum", values });
const obj = (fields, required = []) => ({ type: "object", fields, required });
const arrayOf = (items) => ({ type: "array", items });
const mapOf = (values) => ({ type: "map", values });
// Kubernetes quantities (100m, 1Gi, 2) and Prometheus durations (5s, 1m30s).
const quantity = { type: "pattern", re: /^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/, what: "a quantity" };
const duration = { type: "pattern", re: /^(([0-9]+)(ms|s|m|h|d|w|y))+$/, what: "a Prometheus duration" };
const labelName = { type: "pattern", re: /^[a-zA-Z_][a-zA-Z0-9_]*$/, what: "a Prometheus label name" };

const metadata = obj(
  { name: str, namespace: str, labels: mapOf(str), annotations: mapOf(str) },
  ["name"],
);
const resources = obj({
  requests: obj({ cpu: quantity, memory: quantity }),
  limits: obj({ cpu: quantity, memory: quantity }),
});

// --- CloudNativePG Cluster -------------------------------------------------------------------

const cluster = obj(
  {
    apiVersion: oneOf("postgresql.cnpg.io/v1"),
    kind: oneOf("Cluster"),
    metadata,
    spec: obj(
      {
        instances: int,
        // The operator reads the PostgreSQL major version from the tag: it must start with it.
        imageName: { type: "pattern", re: /^[^:@]+:[0-9]+(\.[0-9]+)?([-.][A-Za-z0-9._-]+)?$/, what: "an image whose tag starts with the PostgreSQL version" },
        primaryUpdateStrategy: oneOf("unsupervised", "supervised"),
        primaryUpdateMethod: oneOf("switchover", "restart"),
        enableSuperuserAccess: bool,
        enablePDB: bool,
        managed: obj({
          roles: arrayOf(
            obj(
              {
                name: str,
                ensure: oneOf("present", "absent"),
                login: bool,
                superuser: bool,
                createdb: bool,
                createrole: bool,
                inherit: bool,
                replication: bool,
                bypassrls: bool,
                connectionLimit: int,
                comment: str,
                inRoles: arrayOf(str),
                passwordSecret: obj({ name: str }, ["name"]),
              },
              ["name"],
            ),
          ),
        }),
        bootstrap: obj({
          initdb: obj({ database: str, owner: str, secret: obj({ name: str }, ["name"]) }),
        }),
        postgresql: obj({
          // PostgreSQL settings are strings, numbers included ("200").
          parameters: mapOf(str),
          synchronous: obj(
            {
              method: oneOf("any", "first"),
              number: int,
              dataDurability: oneOf("required", "preferred"),
            },
            ["method", "number"],
          ),
        }),
        storage: obj({ size: quantity, storageClass: str }, ["size"]),
        resources,
        affinity: obj({
          enablePodAntiAffinity: bool,
          topologyKey: str,
          podAntiAffinityType: oneOf("preferred", "required"),
        }),
        inheritedMetadata: obj({ labels: mapOf(str), annotations: mapOf(str) }),
      },
      ["instances", "storage"],
    ),
  },
  ["apiVersion", "kind", "metadata", "spec"],
);

// --- Prometheus Operator ServiceMonitor ------------------------------------------------------

const relabeling = obj({
  sourceLabels: arrayOf(str),
  separator: str,
  targetLabel: labelName,
  regex: str,
  replacement: str,
  action: oneOf("replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep", "lowercase", "uppercase", "keepequal", "dropequal"),
});

const serviceMonitor = obj(
  {
    apiVersion: oneOf("monitoring.coreos.com/v1"),
    kind: oneOf("ServiceMonitor"),
    metadata,
    spec: obj(
      {
        jobLabel: str,
        selector: obj({ matchLabels: mapOf(str) }, ["matchLabels"]),
        namespaceSelector: obj({ any: bool, matchNames: arrayOf(str) }),
        endpoints: arrayOf(
          obj(
            {
              port: str,
              path: str,
              scheme: oneOf("http", "https"),
              interval: duration,
              scrapeTimeout: duration,
              honorLabels: bool,
              relabelings: arrayOf(relabeling),
              metricRelabelings: arrayOf(relabeling),
            },
            ["port"],
          ),
        ),
      },
      ["selector", "endpoints"],
    ),
  },
  ["apiVersion", "kind", "metadata", "spec"],
);

export const KNOWN = {
  "postgresql.cnpg.io/v1 Cluster": cluster,
  "monitoring.coreos.com/v1 ServiceMonitor": serviceMonitor,
};

/** Every problem of `value` against `type`, as "path: message" strings (none: it fits). */
export function check(value, type, where = "") {
  const at = where || "(top)";
  switch (type.type) {
    case "string":
      return typeof value === "string" ? [] : [`${at}: expected a string, got ${JSON.stringify(value)}`];
    case "integer":
      return Number.isInteger(value) ? [] : [`${at}: expected an integer, got ${JSON.stringify(value)}`];
    case "boolean":
      return typeof value === "boolean" ? [] : [`${at}: expected true or false, got ${JSON.stringify(value)}`];
    case "enum":
      return type.values.includes(value) ? [] : [`${at}: expected one of ${type.values.join(", ")}, got ${JSON.stringify(value)}`];
    case "pattern":
      return typeof value === "string" && type.re.test(value) ? [] : [`${at}: expected ${type.what}, got ${JSON.stringify(value)}`];
    case "array":
      if (!Array.isArray(value)) return [`${at}: expected a list`];
      return value.flatMap((item, i) => check(item, type.items, `${where}[${i}]`));
    case "map":
      if (!isPlainObject(value)) return [`${at}: expected a map`];
      return Object.entries(value).flatMap(([k, v]) => check(v, type.values, `${where}.${k}`));
    case "object": {
      if (!isPlainObject(value)) return [`${at}: expected an object`];
      const problems = Object.keys(value)
        .filter((k) => !(k in type.fields))
        .map((k) => `${where}.${k}: not a known field (known: ${Object.keys(type.fields).join(", ")})`);
      for (const k of type.required) if (!(k in value)) problems.push(`${where}.${k}: required`);
      for (const [k, v] of Object.entries(value)) {
        if (k in type.fields) problems.push(...check(v, type.fields[k], `${where}.${k}`));
      }
      return problems;
    }
    default:
      throw new Error(`unknown type ${type.type}`);
  }
}

const isPlainObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
