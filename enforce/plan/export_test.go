package plan

// DiffRules is diffRules, for the tests.
var DiffRules = diffRules
