#!/bin/sh
# Creates the project-local virtual environment the Helm chart test runs in (default .venv-helm/)
# with the packages of tests/helm/requirements.txt, and reuses it while those pins and the
# Python it was made with stay the same. Needs Python 3.10 or later (helm-python-sdk does).
#   sh scripts/helm-venv.sh [DIR]      HELM_PYTHON=/path/to/python3.x picks the interpreter.
set -eu
cd "$(dirname "$0")/.."
venv=${1:-.venv-helm}
requirements=tests/helm/requirements.txt

python=""
for candidate in ${HELM_PYTHON:-} python3 python3.13 python3.12 python3.11 python3.10; do
	command -v "$candidate" >/dev/null 2>&1 || continue
	if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
		python=$(command -v "$candidate")
		break
	fi
done
if [ -z "$python" ]; then
	echo "helm-venv: the Helm chart test needs Python 3.10 or later (helm-python-sdk); none found on PATH (set HELM_PYTHON)" >&2
	exit 1
fi

# What the environment was made from: the pins and the interpreter's version.
stamp="$(cat "$requirements") $("$python" -c 'import sys; print(sys.version)')"
if [ -x "$venv/bin/python" ] && [ -f "$venv/.stamp" ] && [ "$(cat "$venv/.stamp")" = "$stamp" ]; then
	exit 0
fi

echo "helm-venv: creating $venv with $python ($("$python" --version 2>&1))"
# The stamp is written last: an interrupted run leaves none, and the next one starts over.
rm -rf "$venv"
if ! "$python" -m venv "$venv" 2>/dev/null; then
	# Debian's python3 has no venv module without python3-venv.
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "helm-venv: installing python3-venv"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
		rm -rf "$venv"
		"$python" -m venv "$venv"
	else
		echo "helm-venv: $python cannot create a virtual environment: install python3-venv (apt-get install python3-venv) and run again" >&2
		exit 1
	fi
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
printf '%s' "$stamp" > "$venv/.stamp"
echo "helm-venv: ready ($("$venv/bin/python" -c 'import helm_python as h; print("helm-python-sdk", h.__version__, "Helm", h.helm_sdk_version())'))"
