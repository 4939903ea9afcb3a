// Read by MathJax when it loads: typeset only the spans and blocks pymdownx.arithmatex marked
// (\( ... \) inline, \[ ... \] displayed), nothing else on the page.
window.MathJax = {
  tex: {inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]]},
  options: {ignoreHtmlClass: ".*", processHtmlClass: "arithmatex"},
};
