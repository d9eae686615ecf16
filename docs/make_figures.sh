#!/usr/bin/env bash
# Regenerates the README's example figures (docs/figures/) with the project's own commands, from synthetic
# data (and scikit-image's astronaut photograph for face finding): about 8 minutes on 2 CPU cores.
#
#     bash docs/make_figures.sh [WORKDIR]        # default runs/figures; needs the test extra (scikit-image)
#
# The models learn the synthetic drawings, so what they say about the real photograph means nothing: the
# figures show what each command draws, not what a trained network sees.
set -euo pipefail
W=${1:-runs/figures}
FIG=docs/figures
mkdir -p "$W" "$FIG"

# DAN, the quickstart recipe: evaluation figures, then predict.py and explain.py on a real photograph
python scripts/make_synthetic.py --layout rafdb --out "$W/data/rafdb" --num_train 2000 --num_test 500
python scripts/train.py --config configs/dan_rafdb.py:quick --config.data.root="$W/data/rafdb" --workdir "$W/dan"
python scripts/evaluate.py --model "$W/dan/best" --config configs/dan_rafdb.py:quick \
    --config.data.root="$W/data/rafdb" --out "$W/dan_eval" --overwrite
python -c "import sys, skimage.data, PIL.Image; PIL.Image.fromarray(skimage.data.astronaut()).save(sys.argv[1])" \
    "$W/astronaut.png"
python scripts/predict.py --model "$W/dan/best" "$W/astronaut.png" --out "$W/dan_predict" --overwrite
python scripts/explain.py --model "$W/dan/best" "$W/astronaut.png" --out "$W/dan_explain" --overwrite
cp "$W/dan_eval/confusion_matrix.png" "$FIG/dan_confusion_matrix.png"
cp "$W/dan_eval/per_class.png" "$FIG/dan_per_class.png"
cp "$W/dan_predict/annotated/0001_astronaut.png" "$FIG/dan_predict_astronaut.png"
cp "$W/dan_explain/0001_astronaut.png" "$FIG/dan_explain_astronaut.png"

# Emotion-FAN (relation attention) on synthetic AFEW videos: per-frame maps and weights of one test video
python scripts/make_synthetic.py --layout afew --out "$W/data/afew" --num_train 140 --num_test 70
python scripts/train.py --config configs/fan_afew_relation.py:cpu --config.data.root="$W/data/afew" --workdir "$W/fan"
video=$(find "$W/data/afew/face/val_afew" -mindepth 2 -maxdepth 2 -type d | sort | while read -r d; do
    [ "$(ls "$d" | wc -l)" -ge 4 ] && echo "$d" && break; done)
python scripts/explain.py --model "$W/fan/best" "$video" --faces none --out "$W/fan_explain" --overwrite
cp "$W/fan_explain/0001_$(basename "$video").png" "$FIG/fan_explain_video.png"

# FAER on synthetic CelebA: the per-attribute accuracy chart written with the best model
python scripts/make_synthetic.py --layout celeba --out "$W/data/celeba"
python scripts/train.py --config configs/faer_celeba.py:cpu --config.data.root="$W/data/celeba" --workdir "$W/faer"
cp "$W/faer/best/per_attribute_accuracy.png" "$FIG/faer_per_attribute_accuracy.png"
echo "figures in $FIG"
