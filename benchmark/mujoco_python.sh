# Sourced by parity.sh and rpo.sh, which define die: is a python the one a stack needs?
#
#   check_mujoco_python WHAT PYTHON VERSION HOW [WHY]
#
# dies with one line unless PYTHON runs, imports mujoco, and has a mujoco version that starts with
# VERSION ("2.", "2.3.7", "3."). WHAT names the arm or set in the message, HOW says how to get
# such a python, WHY (optional) why that version.

# How to build the venv of the published simulator, mujoco 2.3.7 (its wheels stop at Python 3.11,
# torch 2.13.0's start at 3.10)
PUBLISHED_VENV_HOW="build it with 'python3 -m venv .venv-mujoco237 && .venv-mujoco237/bin/pip install torch==2.13.0 -e \".[mujoco-published]\"' (Python 3.10 or 3.11)"

check_mujoco_python() {
    local what=$1 py=$2 wanted=$3 how=$4 why=${5:-} version
    command -v "$py" >/dev/null || die "$what: no python at $py; $how"
    version=$("$py" -c 'import mujoco; print(mujoco.__version__)' 2>/dev/null) ||
        die "$what: $py cannot import mujoco; $how"
    [[ $version == "$wanted"* ]] || die "$what needs mujoco ${wanted/%./.x}${why:+ ($why)} but $py has mujoco $version"
}
