#!/usr/bin/env bash
# Checks of the Ansible face of vmsan.network, as root on Debian 12:
#   1. ansible-galaxy collection build
#   2. ansible-test sanity on what the tarball ships (at .../ansible_collections/vmsan/network)
#   3. ansible-lint --profile production
#   4. ansible-doc for every module and role of the installed tarball
#   5. the tarball installed on its own, and the site playbook from it run twice
#      against a sandbox machine (changes, then none)
#   6. molecule test for every scenario (skip with --no-molecule)
# Everything that changes networking runs inside throwaway namespaces
# (python -m sandbox.machines: tests/sandbox/machines.py), never in this machine's own.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
export PATH="$repo/.venv/bin:$PATH"
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
python="$repo/.venv/bin/python"
machines=("$python" -m sandbox.machines)    # the test harness's sandbox machines

molecule=1
for arg in "$@"; do
    case "$arg" in
        --no-molecule) molecule=0 ;;
        *) echo "usage: $0 [--no-molecule]" >&2; exit 2 ;;
    esac
done

work="$(mktemp -d /tmp/vmsan-ansible-checks.XXXXXX)"
cleanup() {
    "${machines[@]}" stop "$work/sandbox" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

# ansible-test bootstraps pip in its venvs with get-pip.py, which it downloads
# from a host this machine cannot reach. The stand-in bootstraps pip with
# ensurepip and installs what ansible-test asks for from the package index.
install_get_pip_standin() {
    local version
    version="$("$python" - <<'PY'
import re, ansible_test._internal.python_requirements as r
print(re.search(r"pip='([0-9.]+)'", open(r.__file__).read()).group(1))
PY
)"
    local path="$HOME/.ansible/test/cache/get_pip_${version//./_}.py"
    mkdir -p "$(dirname "$path")"
    cat > "$path" <<'PY'
# Stand-in for get-pip.py, written by vmsan's scripts/ansible-checks.sh: the
# real script is downloaded from a host this machine cannot reach.
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
PY
}

step "build the collection"
ansible-galaxy collection build --output-path "$work/dist" "$repo"
tarball="$(ls "$work"/dist/vmsan-network-*.tar.gz)"

step "ansible-test sanity (the files the tarball ships)"
install_get_pip_standin
tree="$work/sanity/ansible_collections/vmsan/network"
mkdir -p "$tree"
tar -xzf "$tarball" -C "$tree"
(cd "$tree" && ansible-test sanity --local --python "$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')")

step "ansible-lint --profile production"
ansible-lint --profile production --offline

step "install the tarball on its own"
# From here on Ansible sees the installed tarball only, not the checkout that
# setup.sh links into the venv.
export ANSIBLE_COLLECTIONS_PATH="$work/collections" ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
ansible-galaxy collection install --force "$tarball" -p "$work/collections"
installed="$work/collections/ansible_collections/vmsan/network"
[ -f "$installed/MANIFEST.json" ] || { echo "the tarball did not install to $installed" >&2; exit 1; }

step "ansible-doc for every module and role"
for module in "$installed"/plugins/modules/*.py; do
    name="vmsan.network.$(basename "$module" .py)"
    ansible-doc "$name" > "$work/doc.txt"
    grep -q "EXAMPLES" "$work/doc.txt" || { echo "ansible-doc $name shows no EXAMPLES" >&2; exit 1; }
    echo "ok: $name"
done
for role in "$installed"/roles/*/; do
    name="vmsan.network.$(basename "$role")"
    ansible-doc -t role "$name" > "$work/doc.txt"
    echo "ok: $name (role)"
done

step "the site playbook from the installed tarball, twice, on a sandbox machine"
"${machines[@]}" start "$work/sandbox" --hosts 1 >/dev/null
cat > "$work/vms.yml" <<'YML'
---
vmsan_vms_prune: true
vmsan_vms:
  - name: "{{ vmsan_sandbox_prefix }}-web"
    allowed_cidrs: [203.0.113.10]
    published_ports: ["8080:80"]
  - name: "{{ vmsan_sandbox_prefix }}-shut"
    network_policy: deny-all
YML
run_site() {
    ansible-playbook -i "$work/sandbox/inventory.yml" -e "@$work/vms.yml" vmsan.network.site | tee "$work/run.log" \
        | grep -E '^(PLAY RECAP|h1 )'
}
run_site
grep -Eq '^h1 .* changed=[1-9][0-9]* .* failed=0' "$work/run.log" || { echo "first run changed nothing" >&2; exit 1; }
run_site
grep -Eq '^h1 .* changed=0 .* failed=0' "$work/run.log" || { echo "second run was not idempotent" >&2; exit 1; }
prefix="$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["machines"][0]["prefix"])' "$work/sandbox/sandbox.json")"
"${machines[@]}" probe "$work/sandbox" --vm "$prefix-web" \
    --expect tcp:203.0.113.10:9000=open --expect tcp:203.0.113.11:9000=closed --expect publish:8080:80=open >/dev/null
"${machines[@]}" probe "$work/sandbox" --vm "$prefix-shut" --expect tcp:203.0.113.10:9000=closed >/dev/null
echo "ok: policies hold from the guests"
"${machines[@]}" stop "$work/sandbox"
unset ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_SCAN_SYS_PATH

if [ "$molecule" = 1 ]; then
    for scenario in extensions/molecule/*/molecule.yml; do
        name="$(basename "$(dirname "$scenario")")"
        step "molecule test -s $name"
        molecule test -s "$name"
    done
fi

step "ansible checks passed"
