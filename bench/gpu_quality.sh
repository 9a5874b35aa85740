#!/usr/bin/env bash
# Quality runs on a GPU machine that has PyTorch but not this project's other dependencies: the library
# (mmcore) runs through bench/direct.py, no Prefect or MLflow. Several runs share the GPU at once.
#   OUT=results-folder bash bench/gpu_quality.sh
# Needs the easy-VQA raw dataset where the catalog puts it under data/ (`mm data fetch easy-vqa`); the
# shapes-large one is generated here. Runs that would share a data root get their own (data2, data3), with
# the raw dataset linked in, so no run waits on another's ingest.
set -u
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:.
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, pydantic; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
raw_dir() {  # preset, data root: where that config's raw dataset lives (the catalog says, not this script)
  python3 -c 'import sys
from mmcore.catalog import Catalog
from mmcore.config import load_config
print(Catalog.from_config(load_config(sys.argv[1], {"data_root": sys.argv[2]})).raw.resolve())' "$1" "$2"
}
link_raw() {  # preset, data root: that root's raw dataset is the one under data/
  local link
  link=$(raw_dir "$1" "$2") || return 1
  mkdir -p "$(dirname "$link")" && ln -sfn "$(raw_dir "$1" data)" "$link"
}
link_raw easy-vqa data2 && link_raw shapes-large data3 || exit 1
python3 -c '
from mmcore.catalog import Catalog
from mmcore.config import load_config
from mmcore.data.synth import generate_shapes
cfg = load_config("shapes-large", {"data_root": "data"})
generate_shapes(Catalog.from_config(cfg).raw, 21000, seed=0, image_size=cfg.ingest.image_size, test_images=1000)' &
gen=$!
run() {  # name, then bench.direct arguments
  local name=$1; shift
  timeout "${LIMIT:-480}" python3 -m bench.direct --threads 3 --out "/tmp/$name.json" "$@" > "$OUT/$name.log" 2>&1
  echo "exit $?" >> "$OUT/$name.log"
}
run easy-vqa --preset easy-vqa &
run easy-vqa-long --preset easy-vqa --set data_root=data2 --set pretrain.epochs=20 --set heads.epochs=20 &
wait $gen
run shapes-gru --preset shapes-large &
run shapes-transformer --preset shapes-large --set data_root=data3 --set encoder.text_encoder=transformer \
  --set encoder.text_layers=4 &
wait
