#!/bin/sh
# Create the virtual environment at $1 with a Python 3.10 interpreter, unless
# it exists already. tfx 1.16 installs on Python 3.10 only.
set -eu
venv="$1"
if [ -x "$venv/bin/python" ]; then
    exit 0
fi

find_python() {
    for candidate in "${PYTHON:-}" python3.10; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    # pyenv's python3.10 shim fails unless a 3.10 version is selected, so ask
    # pyenv for the interpreter's location directly.
    if command -v pyenv >/dev/null 2>&1; then
        for version in $(pyenv versions --bare 2>/dev/null | grep '^3\.10\.' | sort -t. -k3 -n -r); do
            prefix="$(pyenv prefix "$version" 2>/dev/null)" || continue
            if [ -x "$prefix/bin/python3.10" ]; then
                echo "$prefix/bin/python3.10"
                return 0
            fi
        done
    fi
    return 1
}

if ! python="$(find_python)"; then
    echo "error: no Python 3.10 interpreter found; tfx 1.16 needs Python 3.10." >&2
    echo "Install one (for example 'pyenv install 3.10.13' or your system's python3.10 package)," >&2
    echo "or point PYTHON at it: make PYTHON=/path/to/python3.10 test" >&2
    exit 1
fi
echo "Creating $venv with $python"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade "pip==24.2" "setuptools==75.1.0" "wheel==0.44.0"
