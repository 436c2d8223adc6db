#!/usr/bin/env bash
# Builds the reference: the published CleanRL RPO script, cleanrl/rpo_continuous_action.py of the
# cleanrl 1.2.0 wheel on the Python package registry, in a virtual environment of its own on the stack
# it was written for (gymnasium 0.29.1, mujoco 2.3.7, numpy < 2, torch 2.13.0, tensorboard). It cannot
# run on gymnasium 1.x, which is why it lives apart from the project.
#
#   benchmark/reference.sh          # idempotent; prints the python and the script
#
# Result: REF_DIR/venv/bin/python and REF_DIR/rpo_reference.py (REF_DIR defaults to /tmp/rpo-reference),
# which benchmark/parity.sh, benchmark/reference_trainer.py, benchmark/speed.py --against-reference and
# the parity tests use. PYTHON3 (default python3) makes the venv.
#
# The wheel declares Python < 3.11 and pulls in the rest of CleanRL's dependencies, so it is not installed:
# pip downloads it alone (its hash is checked) and the script is taken out of it. Rerunning checks the
# venv and the script's hash, and redoes only what is missing or different.
#
# Exit status: 0 built (or already there); 3 the package index cannot be reached (offline: the parity tests
# skip); 4 PYTHON3 is not Python 3.10 or 3.11, the versions both torch 2.13.0 and mujoco 2.3.7 have wheels for
# (the parity tests skip);
# 1 anything else, e.g. a failed install or a hash that does not match (the parity tests fail); 2 bad usage.
# The last line on stderr says why.
set -euo pipefail

WHEEL_REQUIREMENT="cleanrl==1.2.0 --hash=sha256:002f6dac6cd0efb5889cd9096a252da1b4bc98a8f52ccb1f47a7215c18b30369"
WHEEL_MEMBER="cleanrl/rpo_continuous_action.py"
SCRIPT_SHA256="c11f1dc0d010b575ceaf53084e1926a05d40c64a90b3106c916586ddfcb5bb68"

case ${1:-} in
    "") ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "reference.sh: error: unknown argument '$1' (it takes none; REF_DIR and PYTHON3 are read from the environment)" >&2; exit 2 ;;
esac

REF_DIR=${REF_DIR:-/tmp/rpo-reference}
PYTHON3=${PYTHON3:-python3}
venv=$REF_DIR/venv
python=$venv/bin/python
script=$REF_DIR/rpo_reference.py
mkdir -p "$REF_DIR"

# pip, its messages passed on, then one line that says why it failed: exit 3 where it could not connect
# (pip's own messages for that, as it retries), else exit 1.
CONNECTION_ERRORS='NewConnectionError|NameResolutionError|ConnectTimeoutError|ReadTimeoutError|ProxyError|SSLError|Network is unreachable'
run_pip() {
    local log rc=0
    log=$(mktemp)
    "$python" -m pip "$@" 2>"$log" || rc=$?
    cat "$log" >&2
    if [[ $rc != 0 ]]; then
        local last connection
        last=$(grep '^ERROR' "$log" | tail -n 1 || true)
        connection=$(grep -oE "$CONNECTION_ERRORS" "$log" | tail -n 1 || true)
        rm -f "$log"
        # offline: pip found nothing (or could not fetch a file) and said it could not connect; not a retry that
        # connected in the end and then failed for another reason (a hash that does not match, ...)
        if [[ -n $connection && ($last =~ $CONNECTION_ERRORS || $last == *"No matching distribution found"*) ]]; then
            echo "reference.sh: error: cannot reach the package index (pip $1: $connection)" >&2
            exit 3
        fi
        echo "reference.sh: error: pip $1 failed with status $rc: ${last:-see its messages above}" >&2
        exit 1
    fi
    rm -f "$log"
}

# What the script imports (argparse and distutils' strtobool) and the stack it runs on.
check_venv='import distutils.util, gymnasium, mujoco, numpy, torch, torch.utils.tensorboard
assert (gymnasium.__version__, mujoco.__version__, numpy.__version__[0]) == ("0.29.1", "2.3.7", "1"), "versions"
distutils.util.strtobool'
if ! "$python" -c "$check_venv" 2>/dev/null; then
    command -v "$PYTHON3" >/dev/null || { echo "reference.sh: error: no $PYTHON3 to make the venv with (set PYTHON3)" >&2; exit 2; }
    if ! "$PYTHON3" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 11))'; then
        version=$("$PYTHON3" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo "unknown")
        echo "reference.sh: error: $PYTHON3 is Python $version, but the reference's stack needs Python 3.10 or 3.11 (torch 2.13.0 has wheels from 3.10 on, mujoco 2.3.7 up to 3.11): set PYTHON3 to one of those" >&2
        exit 4
    fi
    echo "building the reference's venv in $venv"
    "$PYTHON3" -m venv "$venv"
    run_pip install -q torch==2.13.0
    run_pip install -q "gymnasium[mujoco]==0.29.1" "mujoco==2.3.7" "numpy<2" tensorboard setuptools
    "$python" -c "$check_venv"
fi

sha256() { "$python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"; }
if [[ ! -f $script || $(sha256 "$script") != "$SCRIPT_SHA256" ]]; then
    wheels=$REF_DIR/wheel
    mkdir -p "$wheels"
    echo "$WHEEL_REQUIREMENT" >"$wheels/requirements.txt"
    # --python-version: the wheel's Requires-Python is < 3.11, whatever python runs pip
    run_pip download -q --no-deps --only-binary=:all: --python-version 3.9 --require-hashes \
        -r "$wheels/requirements.txt" -d "$wheels"
    "$python" - "$wheels/cleanrl-1.2.0-py3-none-any.whl" "$WHEEL_MEMBER" "$script.part" <<'EOF'
import sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, open(out, "wb") as f:
    f.write(z.read(member))
EOF
    got=$(sha256 "$script.part")
    if [[ $got != "$SCRIPT_SHA256" ]]; then
        echo "reference.sh: error: $WHEEL_MEMBER in the wheel has sha256 $got, not $SCRIPT_SHA256" >&2
        exit 1
    fi
    mv "$script.part" "$script"
fi
echo "python: $python"
echo "script: $script"
