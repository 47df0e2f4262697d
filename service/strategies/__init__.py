"""Search strategies: manual, exact, random, bayes (Ray Tune) and rl (Ray RLlib)."""
