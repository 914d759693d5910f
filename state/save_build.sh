#!/bin/sh
# Copy what the default-model build needs to go on in the next session into state/default-model/:
# its build.json (stages done, compute used), the DiT's TensorBoard log and the snapshots' benches and
# curves. The DiT's checkpoints (~90 MB each) stay in runs/: only the shipped model belongs in git, so
# on a machine without that runs/ the DiT starts again from step 0.
# The data, the VAE copy and the latent cache are not kept: the build makes them again (the data is
# seeded), because a stage recorded as done whose output is missing runs again.
#   state/save_build.sh                       # runs/default-model -> state/default-model
# Restore and go on:
#   mkdir -p runs/default-model && cp -r state/default-model/. runs/default-model/
#   nohup python scripts/build_default_model.py --threads 1 --deadline MIN >> runs/build.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
src=${1:-runs/default-model}
dest=state/default-model
if [ ! -f $src/build.json ]; then echo "no build record $src/build.json; $dest left as it is" >&2; exit 1; fi
rm -rf "$dest"
mkdir -p "$dest/dit"
cp $src/build.json "$dest/"
if [ -d $src/dit/tensorboard ]; then cp -r $src/dit/tensorboard "$dest/dit/"; fi
for snap in $src/snapshots/*; do
  [ -d "$snap" ] || continue
  mkdir -p "$dest/snapshots/$(basename $snap)"
  for part in bench curves; do [ -d "$snap/$part" ] && cp -r "$snap/$part" "$dest/snapshots/$(basename $snap)/"; done
done
echo "saved the build's record into $dest (the DiT checkpoints stay in $src/dit/checkpoints)"
