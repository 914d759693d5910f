#!/bin/sh
# Copy a v2 VAE long run's resume state (study record, the candidate's start weights, the newest
# checkpoint of its long run) into state/DEST.
#   state/save_vae_v2.sh                                   # the video-mode run (runs/vae-study3 -> state/vae-v2)
#   state/save_vae_v2.sh runs/vae-study4 s4-res-frames long-s4-res-frames vae-v2-frames
set -e
cd "$(dirname "$0")/.."
src=${1:-runs/vae-study3}
cand=${2:-s4-res}
long=${3:-long-s4-res-33x32}
dest=state/${4:-vae-v2}
if [ ! -f $src/study.json ]; then echo "no study record $src/study.json; $dest left as it is" >&2; exit 1; fi
latest=$(ls -d $src/$long/run/checkpoints/step_* 2>/dev/null | tail -1)
rm -rf "$dest"
mkdir -p "$dest/$cand" "$dest/$long/run/checkpoints"
cp $src/study.json "$dest/"
if [ -d $src/$cand/weights ]; then
  cp -r $src/$cand/weights "$dest/$cand/"
else  # the study has not exported the candidate yet: keep its newest study checkpoint instead
  ck=$(ls -d $src/$cand/run/checkpoints/step_* 2>/dev/null | tail -1)
  if [ -n "$ck" ]; then mkdir -p "$dest/$cand/run/checkpoints" && cp -r "$ck" "$dest/$cand/run/checkpoints/"; fi
fi
if [ -n "$latest" ]; then cp -r "$latest" "$dest/$long/run/checkpoints/"; fi
if [ -d $src/$long/init ]; then cp -r $src/$long/init "$dest/$long/"; fi  # the long run's start weights
echo "saved ${latest:-no long-run checkpoint yet} into $dest"
