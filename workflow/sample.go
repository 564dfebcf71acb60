package workflow

// sample is written by `dstack init`. It only uses the bash provider and
// POSIX sh that busybox runs, so it works on any runner. Each command stands
// alone: it does not rely on shell state left by the one before.
const sample = `# dstack workflows: run one with "dstack run train" (it runs prepare first,
# then places prepare's artifacts in train's working directory).
# Override a variable with "dstack run train --epochs 5".
workflows:
  - name: prepare
    provider: bash
    commands:
      - mkdir -p data
      - i=1; while [ $i -le 100 ]; do echo $i; i=$((i + 1)); done > data/numbers.txt
      - echo "prepared $(wc -l < data/numbers.txt | tr -d ' ') numbers in data/numbers.txt"
    artifacts:
      - data

  - name: train
    provider: bash
    depends-on:
      - prepare
    variables:
      epochs: 3
    resources:
      cpu: 1
      memory: 256MB
    commands:
      - mkdir -p model
      - sum=0; while read n; do sum=$((sum + n)); done < data/numbers.txt; echo "sum=$sum" > model/result.txt
      - e=1; while [ $e -le ${{ epochs }} ]; do echo "epoch $e/${{ epochs }} loss=$((100 / e))"; sleep 1; e=$((e + 1)); done
      - echo "epochs=${{ epochs }}" >> model/result.txt
      - cat model/result.txt
    artifacts:
      - model
`

// Sample returns the sample workflows file that `dstack init` writes: two
// bash workflows, train depending on prepare's artifacts.
func Sample() []byte { return []byte(sample) }
