"""What csbot learns from agents' actions and labels: the penalised logistic regression
(`plr`), the learned cascade scorer, the intent classifier, threshold tuning and the cascade
optimiser. The only package that imports scikit-learn; its trained models are unpickled in the
worker only (`classifiers.ActiveClassifiers`)."""
