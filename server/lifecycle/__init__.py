"""Model lifecycle: shared route and stage state, the gates that change it,
and the controller that applies it to the model manager and the router."""
