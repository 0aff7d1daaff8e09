"""API routes (SPEC section 3)."""

urlpatterns: list = []
