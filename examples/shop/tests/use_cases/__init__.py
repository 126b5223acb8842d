"""Use-case tests of the shop, written against the ITestHarness Protocol."""
