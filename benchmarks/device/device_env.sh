# Sourced by the device scripts, from the repository root: sets `py` (the Python, $PYTHON
# or python3), puts the carried wheels (.whl/, fetch_wheels.sh) and this checkout on
# PYTHONPATH, caches bytecode (the device image writes none: without the cache every
# process compiled ~1,700 modules, 3 s), and defines `step`: a command cut at $deadline.
py=${PYTHON:-python3}
if [ -d .whl ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/capindex-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/capindex-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/capindex-pycache
step() {  # name, command...: run with the time left before $deadline
    local name=$1 left=$(( deadline - $(date +%s) ))
    shift
    if [ "$left" -lt 20 ]; then echo "== $name: skipped, out of time"; return; fi
    echo "== $name ($(date +%T)): $*"
    timeout "$left" "$@" || echo "== $name: failed or cut off (exit $?)"
}
