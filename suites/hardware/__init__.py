"""Hardware acceptance suites: the node matches its --profile (inventory), every GPU is fit to
take jobs (health), and it performs as the profile expects (bandwidth, compute, agreement)."""
