#!/usr/bin/env bash
# Checks the Helm chart in infra/helm/pinacle, offline:
#
#   1. `helm lint --strict` with each values file in ci/
#   2. renders each (`helm template pinacle ... --namespace pinacle`) and
#      compares it with its golden file in tests/golden/ (`--update`
#      rewrites the golden files instead)
#   3. validates every rendered resource strictly against the Kubernetes
#      1.32 schemas (kubernetes-validate --strict: unknown or misspelt
#      fields fail)
#   4. asserts invariants of the rendered resources: the agent DaemonSet is
#      privileged on the host network with Bidirectional mounts of
#      /var/lib/pinacle and /run/netns; the API runs as non-root with a
#      read-only root filesystem and a /readyz readiness probe; secrets come
#      from Secret references; ...
#   5. checks that bad values are refused (values.schema.json and the
#      chart's own checks): `helm template` must fail on them
#
# Needs helm and kubernetes-validate (scripts/install-chart-tools.sh, which
# `bash scripts/setup.sh --test` runs). $HELM and $KUBERNETES_VALIDATE
# override where they are found.
#
#   bash scripts/check-chart.sh            check
#   bash scripts/check-chart.sh --update   rewrite the golden files, then check
set -euo pipefail
cd "$(dirname "$0")/.."

chart=infra/helm/pinacle
golden_dir=$chart/tests/golden
k8s_version=1.32.0
release=pinacle
namespace=pinacle
update=0
case "${1:-}" in
  "") ;;
  --update) update=1 ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

setup_hint="run \`bash scripts/setup.sh --test\` (or scripts/install-chart-tools.sh) to install it"
die() { echo "check-chart: $*" >&2; exit 1; }

# --- tools --------------------------------------------------------------------
helm=${HELM:-}
if [ -z "$helm" ]; then
  if command -v helm >/dev/null 2>&1; then helm=$(command -v helm)
  elif [ -x /usr/local/bin/helm ]; then helm=/usr/local/bin/helm
  else die "helm not found; $setup_hint"
  fi
fi
"$helm" version >/dev/null 2>&1 || die "$helm does not run; $setup_hint"
kv=${KUBERNETES_VALIDATE:-}
if [ -z "$kv" ]; then
  if command -v kubernetes-validate >/dev/null 2>&1; then kv=$(command -v kubernetes-validate)
  elif [ -x /usr/local/bin/kubernetes-validate ]; then kv=/usr/local/bin/kubernetes-validate
  else die "kubernetes-validate not found; $setup_hint"
  fi
fi
"$kv" --version >/dev/null 2>&1 || die "$kv does not run; $setup_hint"
# The invariant checks parse YAML with PyYAML: the system's, else the copy
# install-chart-tools.sh installed with kubernetes-validate.
py_path=${PINACLE_CHART_TOOLS_PY:-/opt/pinacle-chart-tools/python}
export PYTHONPATH="$py_path${PYTHONPATH:+:$PYTHONPATH}"
python3 -c 'import yaml' 2>/dev/null || die "python3 cannot import yaml (PyYAML); $setup_hint"

helm_version=$("$helm" version --template '{{.Version}}')
echo "check-chart: helm $helm_version, kubernetes-validate $("$kv" --version), Kubernetes $k8s_version schemas"
if [ "$helm_version" != v4.1.4 ]; then
  echo "check-chart: note: the golden files were rendered with helm v4.1.4; another version may render them differently" >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=()
fail() { echo "check-chart: FAIL: $*" >&2; failures+=("$*"); }

# --- lint, render, golden, schema validation -----------------------------------
shopt -s nullglob
values_files=("$chart"/ci/*.yaml)
[ ${#values_files[@]} -ge 3 ] || die "expected at least three values files in $chart/ci"
mkdir -p "$golden_dir"
for values in "${values_files[@]}"; do
  name=$(basename "$values" .yaml)

  out=$tmp/$name.yaml
  echo "check-chart: $name ($values)"
  if ! "$helm" lint --strict --quiet "$chart" -f "$values" --namespace "$namespace" >"$tmp/lint.log" 2>&1; then
    cat "$tmp/lint.log" >&2
    fail "$name: helm lint --strict failed"
  fi
  if ! "$helm" template "$release" "$chart" -f "$values" --namespace "$namespace" >"$out" 2>"$tmp/render.log"; then
    cat "$tmp/render.log" >&2
    fail "$name: helm template failed"
    continue
  fi
  golden=$golden_dir/$name.yaml
  if [ "$update" = 1 ]; then
    cp "$out" "$golden"
    echo "check-chart: wrote $golden"
  elif [ ! -f "$golden" ]; then
    fail "$name: no golden file $golden (run: bash scripts/check-chart.sh --update)"
  elif ! diff -u "$golden" "$out" >"$tmp/golden.diff"; then
    cat "$tmp/golden.diff" >&2
    fail "$name: the rendering differs from $golden (if intended: bash scripts/check-chart.sh --update, and review the diff)"
  fi
  if ! "$kv" --strict --quiet -k "$k8s_version" "$out" >"$tmp/validate.log" 2>&1; then
    cat "$tmp/validate.log" >&2
    fail "$name: kubernetes-validate --strict -k $k8s_version refused the rendering"
  elif grep -q . "$tmp/validate.log"; then
    cat "$tmp/validate.log" >&2
  fi
  if ! python3 - "$name" "$out" "$values" <<'PY'
import sys, yaml

name, path, values_path = sys.argv[1:4]
values = yaml.safe_load(open(values_path)) or {}
docs = [d for d in yaml.safe_load_all(open(path)) if d]
errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)
def find(kind, suffix=""):
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
def one(kind, suffix=""):
    found = find(kind, suffix)
    check(len(found) == 1, f"expected one {kind} named *{suffix}, found {len(found)}")
    return found[0] if found else None

def get(d, *keys, default=None):
    """d[k1][k2]..., or default where a key is missing."""
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
        if d is None:
            return default
    return d
v_agent = values.get("agent", {})
v_api = values.get("api", {})
agent_enabled = v_agent.get("enabled", True)
replicas = v_api.get("replicas", 1)
ingress_enabled = values.get("ingress", {}).get("enabled", True)

# The API: non-root, read-only root, no capabilities, probes, secrets by reference.
api = one("Deployment", "-api")
if api:
    check(api["spec"]["replicas"] == replicas, f"api replicas {api['spec']['replicas']} != values {replicas}")
    pod = api["spec"]["template"]["spec"]
    c = pod["containers"][0]
    sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
    check(sc.get("runAsNonRoot") is True or psc.get("runAsNonRoot") is True, "api: runAsNonRoot is not true")
    check(psc.get("runAsUser", 0) != 0 and sc.get("runAsUser", 1) != 0, "api: runs as uid 0")
    check(sc.get("readOnlyRootFilesystem") is True, "api: root filesystem is not read-only")
    check(sc.get("allowPrivilegeEscalation") is False, "api: allowPrivilegeEscalation is not false")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], "api: capabilities are not all dropped")
    check(not sc.get("privileged"), "api: privileged")
    check(get(c, "readinessProbe", "httpGet", "path") == "/readyz", "api: readiness probe is not GET /readyz")
    check(get(c, "livenessProbe", "httpGet", "path") == "/healthz", "api: liveness probe is not GET /healthz")
    env = {e["name"]: e for e in c.get("env", [])}
    for var in ["PINACLE_DATABASE_URL", "PINACLE_MASTER_KEY"]:
        check(var in env, f"api: {var} is not set")
    for var in ["PINACLE_DATABASE_URL", "PINACLE_REDIS_URL", "PINACLE_MASTER_KEY", "PINACLE_ADMIN_TOKEN"]:
        if var in env:
            check(get(env[var], "valueFrom", "secretKeyRef", "name") is not None, f"api: {var} is not from a Secret")
    redis = values.get("redis", {})
    check(("PINACLE_REDIS_URL" in env) == bool(redis.get("existingSecret") or redis.get("url")),
          "api: PINACLE_REDIS_URL set without a redis value, or missing with one")
    check(get(env.get("PINACLE_LISTEN"), "value") == "0.0.0.0:7070", "api: not listening on 0.0.0.0:7070")
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    check("/var/lib/pinacle" in mounts and "/tmp" in mounts, "api: no writable data dir and /tmp")

# The disruption budget exists exactly when there are several replicas.
pdbs = find("PodDisruptionBudget")
check(len(pdbs) == (1 if replicas > 1 else 0), f"{len(pdbs)} PodDisruptionBudgets with {replicas} replicas")

# The agent: privileged, host network, Bidirectional host mounts, per-node identity.
ds = find("DaemonSet", "-agent")
check(len(ds) == (1 if agent_enabled else 0), f"{len(ds)} agent DaemonSets with agent.enabled={agent_enabled}")
for d in ds:
    pod = d["spec"]["template"]["spec"]
    c = pod["containers"][0]
    check(get(c, "securityContext", "privileged") is True, "agent: container is not privileged")
    check(pod.get("hostNetwork") is True, "agent: not on the host network")
    check(pod.get("dnsPolicy") == "ClusterFirstWithHostNet", "agent: host network without ClusterFirstWithHostNet DNS")
    check(pod.get("nodeSelector"), "agent: no nodeSelector (it would run on every node)")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    data_dir = v_agent.get("hostDataDir", "/var/lib/pinacle")
    for path in [data_dir, "/run/netns"]:
        check(get(mounts.get(path), "mountPropagation") == "Bidirectional", f"agent: {path} is not mounted Bidirectional")
    for path in ["/dev", "/sys/fs/cgroup"]:
        check(path in mounts, f"agent: {path} is not mounted")
    check(get(mounts.get("/lib/modules"), "readOnly") is True, "agent: /lib/modules is not mounted read-only")
    host_paths = {v["name"]: get(v, "hostPath", "path") for v in pod["volumes"]}
    for m in c["volumeMounts"]:
        check(host_paths.get(m["name"]) == m["mountPath"], f"agent: {m['mountPath']} is not the host's same path")
    env = {e["name"]: e for e in c["env"]}
    check(get(env.get("PINACLE_HOST_NAME"), "valueFrom", "fieldRef", "fieldPath") == "spec.nodeName",
          "agent: PINACLE_HOST_NAME is not the node name")
    check(get(env.get("PINACLE_JOIN_TOKEN"), "valueFrom", "secretKeyRef", "name") is not None,
          "agent: PINACLE_JOIN_TOKEN is not from a Secret")
    check(get(env.get("PINACLE_SERVER"), "value", default="").startswith("http"), "agent: PINACLE_SERVER missing")
    check(pod.get("tolerations", []) == v_agent.get("tolerations", []), "agent: tolerations differ from values")

# Migrations: a pre-install/pre-upgrade hook running `pinacle migrate`.
job = one("Job", "-migrate")
if job:
    hooks = job["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(",")
    check({"pre-install", "pre-upgrade"} <= set(hooks), "migrate: not a pre-install,pre-upgrade hook")
    c = job["spec"]["template"]["spec"]["containers"][0]
    check(c.get("args") == ["migrate"], "migrate: does not run `pinacle migrate`")
    check(get(c, "securityContext", "runAsNonRoot") is True, "migrate: runAsNonRoot is not true")

# Services: the API is internal; proxy and SSH types follow the values.
check(get(one("Service", "-api"), "spec", "type") == "ClusterIP", "api Service is not ClusterIP")
proxy_type = get(values, "proxy", "service", "type", default="ClusterIP")
check(get(one("Service", "-proxy"), "spec", "type") == proxy_type, "proxy Service type differs from values")
if get(values, "ssh", "enabled", default=True):
    check(get(one("Service", "-ssh"), "spec", "type") == get(values, "ssh", "service", "type", default="LoadBalancer"),
          "ssh Service type differs from values")

# The ingress: the API host, and *.{domain} to the pod proxy.
ings = find("Ingress")
check(len(ings) == (1 if ingress_enabled else 0), f"{len(ings)} Ingresses with ingress.enabled={ingress_enabled}")
for ing in ings:
    domain = values.get("domain", "pinacle.example.com")
    rules = {r["host"]: r["http"]["paths"][0]["backend"]["service"]["name"] for r in ing["spec"]["rules"]}
    check(rules.get("*." + domain, "").endswith("-proxy"), f"ingress: *.{domain} is not routed to the proxy")
    tls = get(values, "ingress", "tls", "secretName", default="")
    if tls:
        check(get(ing, "spec", "tls", default=[{}])[0].get("secretName") == tls, "ingress: TLS secret differs from values")
        check("*." + domain in ing["spec"]["tls"][0]["hosts"], "ingress: TLS does not cover the wildcard host")

# Nothing secret in plain env values.
for d in docs:
    for c in get(d, "spec", "template", "spec", "containers", default=[]):
        for e in c.get("env", []):
            if any(w in e["name"] for w in ("TOKEN", "KEY", "SECRET", "DATABASE_URL", "REDIS_URL")) and e["name"] != "PINACLE_TLS_KEY":
                check("value" not in e, f"{d['kind']}/{d['metadata']['name']}: {e['name']} is a plain value")

for e in errors:
    print(f"  {name}: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
  then
    fail "$name: invariants do not hold (see above)"
  fi
done

# --- bad values must be refused --------------------------------------------------
# Each case: a values file layered over ci/default-values.yaml, and a piece
# of the error helm must print.
base=$chart/ci/default-values.yaml
refuse() {
  local what=$1 expect=$2 values=$tmp/bad.yaml
  cat >"$values"
  if "$helm" template "$release" "$chart" -f "$base" -f "$values" --namespace "$namespace" >/dev/null 2>"$tmp/bad.log"; then
    fail "bad values accepted: $what"
  elif ! grep -qF -- "$expect" "$tmp/bad.log"; then
    cat "$tmp/bad.log" >&2
    fail "bad values ($what) refused, but without the expected message '$expect'"
  fi
}
refuse "api.replicas: 0" "minimum" <<'EOF'
api:
  replicas: 0
EOF
refuse "an unknown top-level key" "additional properties 'replicaCount' not allowed" <<'EOF'
replicaCount: 2
EOF
refuse "a misspelt nested key" "additional properties 'replica' not allowed" <<'EOF'
api:
  replica: 2
EOF
refuse "a service type outside the enum" "value must be one of" <<'EOF'
proxy:
  service:
    type: Ingress
EOF
refuse "replicas as a string" "got string, want integer" <<'EOF'
api:
  replicas: "3"
EOF
refuse "no database" "database: set database.existingSecret" <<'EOF'
database:
  existingSecret: ""
EOF
refuse "a non-PostgreSQL database URL" "must be a postgres" <<'EOF'
database:
  existingSecret: ""
  url: sqlite:///var/lib/pinacle/pinacle.db
EOF
refuse "no master key" "masterKey: set" <<'EOF'
masterKey:
  existingSecret: ""
EOF
refuse "agents without a join token Secret" "agent.joinTokenSecret.name" <<'EOF'
agent:
  joinTokenSecret:
    name: ""
EOF
refuse "no ingress and a ClusterIP proxy" "proxy.service.type" <<'EOF'
ingress:
  enabled: false
EOF

if [ ${#failures[@]} -gt 0 ]; then
  echo "check-chart: ${#failures[@]} failure(s):" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "check-chart: ok (${#values_files[@]} values files rendered, matched their golden files, validated against Kubernetes $k8s_version; bad values refused)"
