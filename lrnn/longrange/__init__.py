"""Long-range energy terms: Coulomb sums over (latent) charges, charge equilibration,
periodic Ewald/P3M (jax-pme), and the terms composed into models (:mod:`lrnn.models.terms`)."""
