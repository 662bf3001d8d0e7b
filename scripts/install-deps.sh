#!/bin/sh
# Installs every Debian 12 package that autopipe's build and test suite need.
# Idempotent and quiet when everything is already there. Run as root.
set -e
PKGS="build-essential autoconf automake libtool pkg-config
      openmpi-bin libopenmpi-dev libhdf5-dev hdf5-tools libyaml-dev
      libopenblas-dev libcjson-dev libcairo2-dev
      slurm-wlm slurmctld slurmd slurm-client munge libslurm-dev
      python3 ca-certificates"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-deps.sh: missing packages:$missing (run as root, or install them with apt-get)" >&2
  exit 1
fi
echo "install-deps.sh: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Debian starts daemons on install; autopipe's tests run their own Slurm and munge.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends $missing >/dev/null
