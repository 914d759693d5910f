#!/bin/sh
# Copy the v2 VAE long run's resume state (study record, start weights, newest checkpoint) into state/vae-v2.
set -e
cd "$(dirname "$0")/.."
src=runs/vae-study3
latest=$(ls -d $src/long-s4-res-33x32/run/checkpoints/step_* | tail -1)
rm -rf state/vae-v2
mkdir -p state/vae-v2/s4-res state/vae-v2/long-s4-res-33x32/run/checkpoints
cp $src/study.json state/vae-v2/
cp -r $src/s4-res/weights state/vae-v2/s4-res/
cp -r "$latest" state/vae-v2/long-s4-res-33x32/run/checkpoints/
echo "saved $latest"
