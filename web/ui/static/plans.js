/* Ingot web UI: the plan pages (plans_script.html, plans_build.html, plans_deployment.html).
 * Builds on ui.js (window.Ingot).
 *
 * Every change goes to the REST API with the session cookie and the CSRF header; a PUT sends
 * If-Match with the eTag the page was rendered with (data-etag), so a plan changed meanwhile is
 * refused with 412 and the page says so instead of overwriting it. A 400's nestedErrors are shown
 * next to the field they name (errorSource) and listed above the Save button. After a save the
 * page is loaded again from the server (?saved=1), so what it shows is what the appliance stored.
 *
 * - Plan script: the custom attributes the content uses are recomputed as it is typed, with the
 *   token rule of plans/tokens.py (TOKEN_RE below mirrors it); "Preview changes" shows
 *   POST /rest/plan-scripts/differences/{id}; Save (POST or PUT), Delete (409 when in use).
 * - Build plan: steps move up / down / go away / are added from the scripts that fit the plan's
 *   type; serialNumber is renumbered 1..n on save. Attribute rows show the constraint inputs of
 *   their type and are assembled into HPE's constraints JSON string, keeping keys this page does
 *   not edit. A hint lists attributes the steps' scripts use that no row declares.
 * - Deployment plan: one field per attribute of the chosen build plan, generated from its type and
 *   constraints (GET /rest/build-plans/{id} when another plan is chosen). Passwords are never
 *   filled in: blank keeps a stored one (the API's "********" rule), "Remove" clears it. The same
 *   form serves the server profile wizard (Ingot.attributeForm, used by profiles.js). "Deploy"
 *   chooses a golden image or an installer (the installer fieldset): the body carries installer
 *   null with the golden image, or the installer object with goldenImageURI empty.
 * Names, values and messages only ever go into textContent or form values, never into markup.
 */
(function () {
  "use strict";

  var I = window.Ingot;
  if (!I) { return; }

  var API_VERSION = "4600";
  var MASK = "********";
  var CONSTRAINT_KEYS = ["helpText", "options", "minimum", "min", "maximum", "max", "increment", "unit",
                         "pattern", "regex", "minlen", "maxlen", "ipv4static", "ipv4dhcp", "ipv4disable", "parameters"];
  var NIC_FIELDS = [  // [sub-field, label], as plans.attributes.NIC_FIELDS (dhcp is a checkbox)
    ["ipaddress", "IP address"], ["netmask", "Netmask"], ["gateway", "Gateway"], ["dns1", "DNS"],
    ["dns2", "DNS 2"], ["domain", "Domain"], ["mac", "MAC"], ["vlanid", "VLAN id"]];
  var STATIC_FIELDS = ["ipaddress", "netmask", "gateway"];  // what DHCP or "IPv4 off" excludes
  // Hints for the browser; the appliance checks every value itself (plans/attributes.py).
  var LABEL = "[A-Za-z0-9](?:[A-Za-z0-9\\-]{0,61}[A-Za-z0-9])?";
  var IPV4 = "(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
  var PATTERNS = {hostname: LABEL + "(?:\\." + LABEL + ")*", fqdn: LABEL + "(?:\\." + LABEL + ")+\\.?", ipv4: IPV4};

  /* --- REST ------------------------------------------------------------------------------- */
  /* Resolves with the JSON body (or {} for 204); rejects with an Error carrying status and body. */
  function call(method, path, body, etag) {
    var headers = {"Accept": "application/json", "X-API-Version": API_VERSION};
    var init = {method: method, headers: headers, credentials: "same-origin", cache: "no-store"};
    if (method !== "GET") { headers["X-CSRF-Token"] = I.csrf; }
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (etag) { headers["If-Match"] = '"' + etag + '"'; }
    return fetch(path, init).then(function (response) {
      return response.text().then(function (text) {
        var data = {};
        try { data = text ? JSON.parse(text) : {}; } catch (ignored) { data = {}; }
        if (response.status === 401) {
          window.location.assign("/ui/login?next=" + encodeURIComponent(window.location.pathname));
        }
        if (!response.ok) {
          var error = new Error(data.message || ("HTTP " + response.status));
          error.status = response.status;
          error.body = data;
          throw error;
        }
        return data;
      });
    });
  }

  /* --- small DOM helpers ------------------------------------------------------------------ */
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function all(root, selector) { return Array.prototype.slice.call(root.querySelectorAll(selector)); }

  function field(form, name) { return form.querySelector('[data-field="' + name + '"]'); }

  function value(form, name) {
    var input = field(form, name);
    return input ? input.value : "";
  }

  function words(text) { return String(text || "").split(/\s+/).filter(Boolean); }

  function commaList(text) {
    return String(text || "").split(",").map(function (s) { return s.trim(); }).filter(Boolean);
  }

  function parseObject(text) {
    if (text && typeof text === "object") { return text; }
    try {
      var data = JSON.parse(text || "{}");
      return data && typeof data === "object" && !Array.isArray(data) ? data : {};
    } catch (ignored) { return {}; }
  }

  function flag(raw, fallback) {
    if (raw === undefined || raw === null || raw === "") { return fallback; }
    if (typeof raw === "boolean") { return raw; }
    return ["true", "yes", "1", "on"].indexOf(String(raw).toLowerCase()) >= 0;
  }

  function numberOrText(text) {
    var trimmed = String(text).trim();
    var n = Number(trimmed);
    return trimmed !== "" && isFinite(n) ? n : trimmed;
  }

  /* A pattern the browser can use (input pattern= is compiled with the v flag); else none. */
  function usablePattern(pattern) {
    try { new RegExp("^(?:" + pattern + ")$", "v"); return true; } catch (ignored) { return false; }
  }

  function notice(text) {
    var box = document.querySelector("[data-plan-notice]");
    if (box) { box.textContent = text; box.hidden = false; }
  }

  /* --- errors ----------------------------------------------------------------------------- */
  function clearErrors(form) {
    all(form, "[data-error-for], [data-attribute-error], [data-step-error], [data-attr-error]").forEach(function (slot) {
      slot.textContent = "";
      slot.hidden = true;
    });
    all(form, "[aria-invalid]").forEach(function (input) { input.removeAttribute("aria-invalid"); });
    all(form, ".has-error").forEach(function (node) { node.classList.remove("has-error"); });
    var box = form.querySelector("[data-plan-errors]");
    if (box) { box.hidden = true; }
  }

  function markSlot(slot, message) {
    if (!slot) { return false; }
    slot.textContent = slot.hidden || !slot.textContent ? message : slot.textContent + " " + message;
    slot.hidden = false;
    var holder = slot.closest("[data-attribute-row], [data-step], [data-attr], label");
    if (holder) {
      holder.classList.add("has-error");
      var input = holder.matches("label") ? holder.querySelector("input, select, textarea")
                                          : holder.querySelector("[data-attr-input]");
      if (input) { input.setAttribute("aria-invalid", "true"); }
    }
    return true;
  }

  /* The error slot next to a plain field (name, planType, oeBuildPlanURI...), if there is one. */
  function fieldSlot(form, source) {
    var slots = all(form, "[data-error-for]");
    for (var i = 0; i < slots.length; i += 1) {
      if (slots[i].getAttribute("data-error-for") === source) { return slots[i]; }
    }
    return null;
  }

  /* Show an API error: the message, each nested error at its field (locate(source) → slot or
   * null) and in the list. 412 gets its own explanation. */
  function showErrors(form, err, locate) {
    clearErrors(form);
    var box = form.querySelector("[data-plan-errors]");
    if (!box) { I.showError(err.message); return; }
    var message = err.message;
    if (err.status === 412) {
      message = "Not saved: someone changed this plan after this page was loaded. Reload the page to get the " +
                "current version (what you changed here is lost), then make your change again.";
    }
    var list = box.querySelector("[data-plan-error-list]");
    list.textContent = "";
    var nested = (err.body && Array.isArray(err.body.nestedErrors)) ? err.body.nestedErrors : [];
    nested.forEach(function (item) {
      var source = String(item.errorSource || item.details || "");
      var text = String(item.message || "");
      markSlot(locate(source) || fieldSlot(form, source), text);
      list.appendChild(el("li", "", (source ? source + ": " : "") + text));
    });
    if (nested.length && err.status === 400) { message = "Not saved:"; }  // the list says what and where
    box.querySelector("[data-plan-error-message]").textContent = message;
    if (err.status === 412) {
      var reload = el("button", "btn btn-small", "Reload the page");
      reload.type = "button";
      reload.addEventListener("click", function () { window.location.reload(); });
      var li = el("li");
      li.appendChild(reload);
      list.appendChild(li);
    }
    box.hidden = false;
    box.scrollIntoView({block: "nearest"});
  }

  /* Save (POST when new, PUT with If-Match otherwise), then load the saved plan's page. */
  function save(form, collection, page, body, locate) {
    var button = form.querySelector("[data-save]");
    var id = form.getAttribute("data-id");
    I.busy(button, true);
    var request = id ? call("PUT", collection + "/" + encodeURIComponent(id), body, form.getAttribute("data-etag"))
                     : call("POST", collection, body);
    request.then(function (saved) {
      window.location.assign(page + "/" + encodeURIComponent(saved.id) + "?saved=1");
    }, function (err) {
      I.busy(button, false);
      showErrors(form, err, locate);
    });
  }

  function wireDelete(form, collection, what) {
    var button = form.querySelector("[data-delete]");
    if (!button) { return; }
    button.addEventListener("click", function () {
      if (!window.confirm("Delete the " + what + " " + form.getAttribute("data-name") + "?")) { return; }
      I.busy(button, true);
      call("DELETE", collection + "/" + encodeURIComponent(form.getAttribute("data-id"))).then(function () {
        window.location.assign("/ui/plans");
      }, function (err) {
        I.busy(button, false);
        showErrors(form, err, function () { return null; });
      });
    });
  }

  /* --- plan scripts ----------------------------------------------------------------------- */
  var IDENT = "[A-Za-z_][A-Za-z0-9_]*";
  // plans/tokens.py TOKEN_RE: a Calm macro @@{name(.sub)}@@ first, then @Name(.sub)(:default)@.
  var TOKEN_RE = "@@\\{(" + IDENT + ")(?:\\.(" + IDENT + "))?\\}@@" +
                 "|@(" + IDENT + ")(?:\\.(" + IDENT + "))?(?::([^@\\n]*))?@";

  /* Every token of the text, left to right, never overlapping (as re.finditer). */
  function discover(text) {
    var re = new RegExp(TOKEN_RE, "g");
    var refs = [];
    var m;
    while ((m = re.exec(text)) !== null) {
      if (m[1] !== undefined) {
        refs.push({name: m[1], sub: m[2], calm: true});
      } else {
        refs.push({name: m[3], sub: m[4], defaultValue: m[5]});
      }
    }
    return refs;
  }

  function byCodePoint(a, b) { return a < b ? -1 : a > b ? 1 : 0; }

  function renderLiveAttributes(form) {
    var list = document.querySelector("[data-live-attributes]");
    if (!list) { return; }
    var seen = {};
    var applianceNames = {};
    discover(field(form, "content").value).forEach(function (ref) {
      if (ref.name.charAt(0) === "_") { applianceNames[ref.name] = true; return; }
      var entry = seen[ref.name] || (seen[ref.name] = {subs: {}, defaults: {}, calm: false});
      if (ref.sub !== undefined) { entry.subs[ref.sub] = true; }
      if (ref.defaultValue !== undefined) { entry.defaults[ref.defaultValue] = true; }
      if (ref.calm) { entry.calm = true; }
    });
    var names = Object.keys(seen).sort(byCodePoint);
    list.textContent = "";
    names.forEach(function (name) {
      var entry = seen[name];
      var li = el("li");
      li.setAttribute("data-attribute-name", name);
      li.appendChild(el("code", "", name));
      var notes = [];
      var subs = Object.keys(entry.subs).sort(byCodePoint);
      if (subs.length) { notes.push(subs.map(function (s) { return "." + s; }).join(" ")); }
      Object.keys(entry.defaults).forEach(function (d) { notes.push("default “" + d + "”"); });
      if (entry.calm) { notes.push("Calm macro"); }
      if (notes.length) { li.appendChild(el("span", "muted small", " " + notes.join(" · "))); }
      list.appendChild(li);
    });
    document.querySelector("[data-live-empty]").hidden = names.length > 0;
    var supplied = Object.keys(applianceNames).sort(byCodePoint);
    var note = document.querySelector("[data-appliance-attributes]");
    note.textContent = supplied.length ? "Supplied by the appliance: " + supplied.join(", ") : "";
    note.hidden = !supplied.length;
  }

  function renderDiff(result) {
    var panel = document.querySelector("[data-diff-panel]");
    var summary = panel.querySelector("[data-diff-summary]");
    var pre = panel.querySelector("[data-diff]");
    pre.textContent = "";
    if (!result.changed) {
      summary.textContent = "No changes: the content is the same as the saved script's.";
      pre.hidden = true;
    } else {
      var parts = [];
      if (result.addedCustomAttributes && result.addedCustomAttributes.length) {
        parts.push("add the attributes " + result.addedCustomAttributes.join(", "));
      }
      if (result.removedCustomAttributes && result.removedCustomAttributes.length) {
        parts.push("remove the attributes " + result.removedCustomAttributes.join(", "));
      }
      summary.textContent = "Saving would change the content" + (parts.length ? ", " + parts.join(" and ") : "") + ".";
      String(result.differences || "").split("\n").forEach(function (line) {
        var kind = line.indexOf("+++") === 0 || line.indexOf("---") === 0 ? "diff-file"
                 : line.charAt(0) === "+" ? "diff-add" : line.charAt(0) === "-" ? "diff-del"
                 : line.indexOf("@@") === 0 ? "diff-hunk" : "";
        pre.appendChild(el("span", kind, line + "\n"));
      });
      pre.hidden = false;
    }
    panel.hidden = false;
    panel.scrollIntoView({block: "nearest"});
  }

  function initScript(form) {
    var content = field(form, "content");
    var timer = null;
    var escaped = false;
    function schedule() {
      if (timer !== null) { window.clearTimeout(timer); }
      timer = window.setTimeout(function () { timer = null; renderLiveAttributes(form); }, 120);
    }
    content.addEventListener("input", schedule);
    content.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { escaped = true; return; }
      var plainTab = event.key === "Tab" && !event.shiftKey && !event.ctrlKey && !event.altKey && !event.metaKey;
      if (plainTab && !escaped && !content.readOnly && !content.disabled) {
        event.preventDefault();
        content.setRangeText("    ", content.selectionStart, content.selectionEnd, "end");
        schedule();
      }
      escaped = false;
    });
    renderLiveAttributes(form);

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      save(form, "/rest/plan-scripts", "/ui/plans/scripts", {
        name: value(form, "name").trim(), description: value(form, "description"),
        planType: value(form, "planType"), content: content.value
      }, function () { return null; });
    });

    var preview = form.querySelector("[data-preview]");
    if (preview) {
      preview.addEventListener("click", function () {
        I.busy(preview, true);
        call("POST", "/rest/plan-scripts/differences/" + encodeURIComponent(form.getAttribute("data-id")),
             content.value).then(function (result) {
          I.busy(preview, false);
          clearErrors(form);
          renderDiff(result);
        }, function (err) {
          I.busy(preview, false);
          showErrors(form, err, function () { return null; });
        });
      });
    }
    wireDelete(form, "/rest/plan-scripts", "plan script");
  }

  /* --- build plans ------------------------------------------------------------------------ */
  var SCRIPT_TYPES_FOR_PLAN = {deploy: ["deploy", "general"], capture: ["capture", "general"]};

  function fits(planType, scriptType) { return (SCRIPT_TYPES_FOR_PLAN[planType] || []).indexOf(scriptType) >= 0; }

  function steps(form) { return all(form, "[data-steps] > [data-step]"); }

  function rows(form) { return all(form, "[data-attribute-rows] > [data-attribute-row]"); }

  function ca(row, key) { return row.querySelector('[data-ca="' + key + '"]'); }

  function refreshSteps(form) {
    var planType = value(form, "oeBuildPlanType");
    var items = steps(form);
    items.forEach(function (li, index) {
      var up = li.querySelector("[data-step-up]");
      var down = li.querySelector("[data-step-down]");
      if (up) { up.disabled = index === 0; }
      if (down) { down.disabled = index === items.length - 1; }
      var misfit = li.querySelector("[data-step-misfit]");
      var scriptType = li.getAttribute("data-script-type");
      var bad = scriptType && !fits(planType, scriptType);
      misfit.textContent = bad ? "A " + planType + " build plan does not run " + scriptType + " scripts." : "";
      misfit.hidden = !bad;
    });
    form.querySelector("[data-no-steps]").hidden = items.length > 0;
    var select = form.querySelector("[data-add-step-select]");
    if (select) {
      Array.prototype.forEach.call(select.options, function (option) {
        if (!option.value) { return; }
        var ok = fits(planType, option.getAttribute("data-type"));
        option.hidden = !ok;
        option.disabled = !ok;
        if (!ok && option.selected) { select.value = ""; }
      });
    }
    refreshUndeclared(form);
  }

  function refreshUndeclared(form) {
    var used = {};
    steps(form).forEach(function (li) { words(li.getAttribute("data-attributes")).forEach(function (n) { used[n] = true; }); });
    var declared = {};
    rows(form).forEach(function (row) { declared[ca(row, "name").value.trim()] = true; });
    var missing = Object.keys(used).filter(function (n) { return !declared[n]; }).sort(byCodePoint);
    var box = form.querySelector("[data-undeclared]");
    var list = box.querySelector("[data-undeclared-list]");
    list.textContent = "";
    missing.forEach(function (name) {
      var item = el("span", "undeclared");
      item.setAttribute("data-undeclared-name", name);
      item.appendChild(el("code", "", name));
      if (document.querySelector("[data-attribute-template]")) {
        var declare = el("button", "btn btn-small", "Declare");
        declare.type = "button";
        declare.setAttribute("data-declare", name);
        declare.setAttribute("aria-label", "Declare " + name);
        item.appendChild(declare);
      }
      list.appendChild(item);
    });
    box.hidden = missing.length === 0;
    form.querySelector("[data-no-attributes]").hidden = rows(form).length > 0;
  }

  function showConstraintInputs(row) {
    var type = ca(row, "type").value;
    row.setAttribute("data-type", type);
    all(row, "[data-for-types]").forEach(function (label) {
      label.hidden = words(label.getAttribute("data-for-types")).indexOf(type) < 0;
    });
    var input = ca(row, "value");
    input.type = type === "password" ? "password" : "text";
    row.querySelector("[data-password-clear]").hidden = !(type === "password" && row.getAttribute("data-password-set"));
  }

  function addStep(form, option) {
    var template = document.querySelector("[data-step-template]");
    var li = template.content.firstElementChild.cloneNode(true);
    li.setAttribute("data-script-uri", option.value);
    li.setAttribute("data-script-type", option.getAttribute("data-type"));
    li.setAttribute("data-attributes", option.getAttribute("data-attributes"));
    li.setAttribute("data-parameters", "");
    li.querySelector("[data-step-name]").textContent = option.getAttribute("data-name");
    li.querySelector("[data-step-type]").textContent = option.getAttribute("data-type");
    var used = words(option.getAttribute("data-attributes"));
    li.querySelector("[data-step-attributes]").textContent = used.length ? "uses " + used.join(", ") : "";
    form.querySelector("[data-steps]").appendChild(li);
    refreshSteps(form);
  }

  function addAttribute(form, name) {
    var template = document.querySelector("[data-attribute-template]");
    var row = template.content.firstElementChild.cloneNode(true);
    form.querySelector("[data-attribute-rows]").appendChild(row);
    if (name) { ca(row, "name").value = name; }
    showConstraintInputs(row);
    refreshUndeclared(form);
    (name ? ca(row, "type") : ca(row, "name")).focus();
  }

  /* One row → HPE's definition; constraint keys this page does not edit are kept as they were. */
  function attributeBody(row) {
    var type = ca(row, "type").value;
    var original = parseObject(row.getAttribute("data-constraints"));
    var regexKey = Object.prototype.hasOwnProperty.call(original, "pattern") ? "pattern" : "regex";
    var c = {};
    Object.keys(original).forEach(function (key) {
      if (CONSTRAINT_KEYS.indexOf(key) < 0) { c[key] = original[key]; }
    });
    function text(key) { return ca(row, key).value.trim(); }
    if (text("helpText")) { c.helpText = text("helpText"); }
    if (type === "string" || type === "option") {
      var options = commaList(ca(row, "options").value);
      if (options.length) { c.options = options; }
    }
    if (type === "number") {
      ["minimum", "maximum", "increment"].forEach(function (key) { if (text(key)) { c[key] = numberOrText(text(key)); } });
      if (text("unit")) { c.unit = text("unit"); }
    }
    if (type === "string" || type === "password") {
      if (ca(row, "regex").value) { c[regexKey] = ca(row, "regex").value; }
      ["minlen", "maxlen"].forEach(function (key) { if (text(key)) { c[key] = numberOrText(text(key)); } });
    }
    if (type === "nic") {
      c.ipv4static = ca(row, "ipv4static").checked;
      c.ipv4dhcp = ca(row, "ipv4dhcp").checked;
      if (ca(row, "ipv4disable").checked) { c.ipv4disable = true; }
      var parameters = commaList(ca(row, "parameters").value);
      if (parameters.length) { c.parameters = parameters; }
    }
    var typed = ca(row, "value").value;
    var defaultValue = typed;
    if (type === "password" && !typed && row.getAttribute("data-password-set") && !ca(row, "clear").checked) {
      defaultValue = MASK;  // keep the stored default
    }
    return {name: ca(row, "name").value.trim(), type: type, value: defaultValue,
            description: ca(row, "description").value, constraints: JSON.stringify(c)};
  }

  function buildPlanLocator(form) {
    return function (source) {
      var m = /^buildStep\[(\d+)\]/.exec(source) || null;
      var items = steps(form);
      if (m) { return items[Number(m[1])] ? items[Number(m[1])].querySelector("[data-step-error]") : null; }
      m = /^buildStep (\d+)/.exec(source);
      if (m) { return items[Number(m[1]) - 1] ? items[Number(m[1]) - 1].querySelector("[data-step-error]") : null; }
      var list = rows(form);
      m = /^customAttributes\[(\d+)\]/.exec(source);
      if (m) { return list[Number(m[1])] ? list[Number(m[1])].querySelector("[data-attribute-error]") : null; }
      var base = source.split(".")[0];
      for (var i = 0; i < list.length; i += 1) {
        if (base && ca(list[i], "name").value.trim() === base) { return list[i].querySelector("[data-attribute-error]"); }
      }
      return null;
    };
  }

  function initBuildPlan(form) {
    refreshSteps(form);
    rows(form).forEach(showConstraintInputs);

    form.addEventListener("click", function (event) {
      var target = event.target instanceof Element ? event.target : null;
      if (!target) { return; }
      var li = target.closest("[data-step]");
      if (target.closest("[data-step-up]") && li && li.previousElementSibling) {
        li.parentNode.insertBefore(li, li.previousElementSibling);
        refreshSteps(form);
        (li.previousElementSibling ? li.querySelector("[data-step-up]") : li.querySelector("[data-step-down]")).focus();
      } else if (target.closest("[data-step-down]") && li && li.nextElementSibling) {
        li.parentNode.insertBefore(li.nextElementSibling, li);
        refreshSteps(form);
        (li.nextElementSibling ? li.querySelector("[data-step-down]") : li.querySelector("[data-step-up]")).focus();
      } else if (target.closest("[data-step-remove]") && li) {
        li.remove();
        refreshSteps(form);
      } else if (target.closest("[data-add-step]")) {
        var select = form.querySelector("[data-add-step-select]");
        var option = select.options[select.selectedIndex];
        if (!option || !option.value) { select.focus(); return; }
        addStep(form, option);
        select.value = "";
      } else if (target.closest("[data-attribute-add]")) {
        addAttribute(form, "");
      } else if (target.closest("[data-declare]")) {
        addAttribute(form, target.closest("[data-declare]").getAttribute("data-declare"));
      } else if (target.closest("[data-attribute-remove]")) {
        target.closest("[data-attribute-row]").remove();
        refreshUndeclared(form);
      }
    });
    form.addEventListener("change", function (event) {
      var target = event.target;
      if (target.matches("[data-plan-type]")) { refreshSteps(form); }
      if (target.matches('[data-ca="type"]')) { showConstraintInputs(target.closest("[data-attribute-row]")); }
    });
    form.addEventListener("input", function (event) {
      if (event.target.matches('[data-ca="name"]')) { refreshUndeclared(form); }
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      save(form, "/rest/build-plans", "/ui/plans/build-plans", {
        name: value(form, "name").trim(), description: value(form, "description"),
        oeBuildPlanType: value(form, "oeBuildPlanType"),
        buildStep: steps(form).map(function (li, index) {
          return {serialNumber: String(index + 1), planScriptUri: li.getAttribute("data-script-uri"),
                  parameters: li.getAttribute("data-parameters") || ""};
        }),
        customAttributes: rows(form).map(attributeBody)
      }, buildPlanLocator(form));
    });
    wireDelete(form, "/rest/build-plans", "build plan");
  }

  /* --- deployment plans ------------------------------------------------------------------- */
  var fieldCounter = 0;

  function nextId() { fieldCounter += 1; return "ca-field-" + fieldCounter; }

  function nicValue(raw) {
    var data = parseObject(raw);
    var out = {};
    Object.keys(data).forEach(function (key) {
      var sub = key.indexOf(".") >= 0 ? key.slice(key.indexOf(".") + 1) : key;
      out[sub === "dns" ? "dns1" : sub] = data[key];
    });
    return out;
  }

  function labelled(text, input, note) {
    var label = el("label");
    label.appendChild(document.createTextNode(text + " "));
    if (note) { label.appendChild(el("span", "muted small", note)); }
    label.appendChild(input);
    return label;
  }

  function checkbox(text, checked, dataName) {
    var label = el("label", "check");
    var input = el("input");
    input.type = "checkbox";
    input.checked = !!checked;
    if (dataName) { input.setAttribute(dataName, ""); }
    label.appendChild(input);
    label.appendChild(document.createTextNode(" " + text));
    return label;
  }

  function nicFieldset(attr, c, wrap) {
    var box = el("fieldset", "nic");
    box.setAttribute("data-nic", "");
    box.appendChild(el("legend", "", attr.name));
    var current = nicValue(attr.value);
    var staticOk = flag(c.ipv4static, true);
    var dhcpOk = flag(c.ipv4dhcp, true);
    var allowed = Array.isArray(c.parameters)
      ? c.parameters.map(function (p) { return p === "dns" ? "dns1" : p; }) : null;
    var modes = el("div", "row");
    if (dhcpOk) { modes.appendChild(checkbox("DHCP", flag(current.dhcp, false), "data-nic-dhcp")); }
    if (flag(c.ipv4disable, false)) { modes.appendChild(checkbox("IPv4 off", flag(current.ipv4disable, false), "data-nic-off")); }
    if (!staticOk) { modes.appendChild(el("span", "muted small", "Static addressing is not allowed for this NIC.")); }
    box.appendChild(modes);
    var grid = el("div", "row nic-fields");
    NIC_FIELDS.forEach(function (pair) {
      var sub = pair[0];
      if (allowed && allowed.indexOf(sub) < 0) { return; }
      if (!staticOk && STATIC_FIELDS.indexOf(sub) >= 0) { return; }
      var input = el("input");
      input.setAttribute("data-nic-field", sub);
      input.id = nextId();
      if (sub === "vlanid") { input.type = "number"; input.min = "0"; input.max = "4094"; input.step = "1"; }
      else { input.type = "text"; }
      if (["ipaddress", "gateway", "dns1", "dns2"].indexOf(sub) >= 0) { input.pattern = IPV4; }
      var raw = current[sub];
      input.value = raw === undefined || raw === null ? "" : String(raw);
      grid.appendChild(labelled(pair[1], input));
    });
    box.appendChild(grid);
    function sync() {
      var dhcp = box.querySelector("[data-nic-dhcp]");
      var off = box.querySelector("[data-nic-off]");
      var noStatic = (dhcp && dhcp.checked) || (off && off.checked);
      STATIC_FIELDS.forEach(function (sub) {
        var input = box.querySelector('[data-nic-field="' + sub + '"]');
        if (input) { input.disabled = !!noStatic; }
      });
    }
    box.addEventListener("change", sync);
    sync();
    wrap.appendChild(box);
  }

  /* One field for a custom attribute, from its type and constraints. options (all optional):
   * flags: the Visible / Editable checkboxes of a deployment plan (default true);
   * passwordSet: the placeholder of a password that is set (default "set: leave blank to keep");
   * clearable: offer "Remove the stored password" for a set password (default true). */
  function attributeField(attr, canEdit, options) {
    var opts = options || {};
    var c = parseObject(attr.constraints);
    var type = String(attr.type || "string");
    var wrap = el("div", "dp-attr");
    wrap.setAttribute("data-attr", attr.name);
    wrap.setAttribute("data-type", type);
    var helpId = nextId();
    var help = [attr.description, c.helpText].filter(Boolean).join(" — ");
    var current = attr.value === undefined || attr.value === null ? "" : String(attr.value);
    var input = null;
    var head = el("div", "dp-attr-head");
    if (type === "nic") {
      nicFieldset(attr, c, wrap);
    } else {
      var options = Array.isArray(c.options) ? c.options.map(String).filter(function (o, i, list) {
        return o !== "" || list.length === 1; }) : [];
      if (type === "option" && options.length || type === "string" && options.some(Boolean)) {
        input = el("select");
        input.appendChild(el("option", "", "(no value)")).value = "";
        options.forEach(function (o) { input.appendChild(el("option", "", o)).value = o; });
        if (current && options.indexOf(current) < 0) { input.appendChild(el("option", "", current)).value = current; }
        input.value = current;
      } else {
        input = el("input");
        input.type = "text";
        if (type === "number") {
          input.type = "number";
          var min = c.minimum !== undefined ? c.minimum : c.min;
          var max = c.maximum !== undefined ? c.maximum : c.max;
          if (min !== undefined && min !== "") { input.min = String(min); }
          if (max !== undefined && max !== "") { input.max = String(max); }
          input.step = c.increment ? String(c.increment) : "any";
          input.value = current;
        } else if (type === "password") {
          input.type = "password";
          input.autocomplete = "new-password";
          input.value = "";  // never filled in: the API only says whether one is set
          if (current === MASK) {
            input.placeholder = opts.passwordSet || "set: leave blank to keep";
            wrap.setAttribute("data-password-set", "true");
          }
        } else {
          input.value = current;
          var pattern = PATTERNS[type] || (type === "string" ? (c.pattern || c.regex) : "");
          if (pattern && usablePattern(pattern)) { input.pattern = pattern; }
          if (type === "string" && c.maxlen) { input.maxLength = Number(c.maxlen); }
        }
      }
      input.id = nextId();
      input.setAttribute("data-attr-input", "");
      var label = el("label", "dp-attr-name", attr.name);
      label.htmlFor = input.id;
      head.appendChild(label);
      head.appendChild(el("span", "badge", type));
      wrap.appendChild(head);
      var line = el("div", "dp-attr-input");
      line.appendChild(input);
      if (c.unit) { line.appendChild(el("span", "muted", String(c.unit))); }
      if (type === "number" && (input.min || input.max)) {
        line.appendChild(el("span", "muted small", "(" + (input.min || "…") + " to " + (input.max || "…") + ")"));
      }
      wrap.appendChild(line);
      if (type === "password" && current === MASK && opts.clearable !== false) {
        wrap.appendChild(checkbox("Remove the stored password", false, "data-password-clear"));
      }
    }
    if (help) {
      var p = el("p", "muted small dp-help", help);
      p.id = helpId;
      wrap.appendChild(p);
      if (input) { input.setAttribute("aria-describedby", helpId); }
    }
    var error = el("p", "field-error");
    error.setAttribute("data-attr-error", "");
    error.hidden = true;
    wrap.appendChild(error);
    if (opts.flags !== false) {
      var flags = el("div", "row dp-flags");
      flags.appendChild(checkbox("Visible", attr.visible !== false, "data-flag-visible"));
      flags.appendChild(checkbox("Editable", attr.editable !== false, "data-flag-editable"));
      wrap.appendChild(flags);
    }
    if (!canEdit) { all(wrap, "input, select").forEach(function (node) { node.disabled = true; }); }
    return wrap;
  }

  /* The form's [data-attribute-fields] box: one field per attribute (see attributeField for
   * options); [data-no-fields] says emptyText when there are none. */
  function renderFields(form, attributes, emptyText, options) {
    var box = form.querySelector("[data-attribute-fields]");
    box.textContent = "";
    var canEdit = !!form.getAttribute("data-can-edit");
    attributes.forEach(function (attr) { box.appendChild(attributeField(attr, canEdit, options)); });
    var empty = form.querySelector("[data-no-fields]");
    empty.textContent = emptyText;
    empty.hidden = attributes.length > 0;
  }

  function fieldValue(wrap) {
    var type = wrap.getAttribute("data-type");
    if (type === "nic") {
      var out = {};
      var dhcp = wrap.querySelector("[data-nic-dhcp]");
      var off = wrap.querySelector("[data-nic-off]");
      if (dhcp && dhcp.checked) { out.dhcp = true; }
      if (off && off.checked) { out.ipv4disable = true; }
      all(wrap, "[data-nic-field]").forEach(function (input) {
        if (!input.disabled && input.value.trim()) { out[input.getAttribute("data-nic-field")] = input.value.trim(); }
      });
      if (!Object.keys(out).length) { return null; }
      if (dhcp && !out.dhcp && !out.ipv4disable) { out.dhcp = false; }
      return out;
    }
    var input = wrap.querySelector("[data-attr-input]");
    if (type === "password") {
      var clear = wrap.querySelector("[data-password-clear]");
      if (input.value) { return input.value; }
      if (clear && clear.checked) { return ""; }
      return wrap.getAttribute("data-password-set") ? MASK : null;
    }
    var text = type === "number" ? input.value.trim() : input.value;
    return text === "" ? null : text;
  }

  function deploymentLocator(form) {
    return function (source) {
      // installer.media and the like: the installer fieldset's slots (even were an attribute named installer)
      if (source === "installer" || source.indexOf("installer.") === 0) { return fieldSlot(form, source); }
      var base = source.split(".")[0];
      var wraps = all(form, "[data-attr]");
      for (var i = 0; i < wraps.length; i += 1) {
        if (wraps[i].getAttribute("data-attr") === base) { return wraps[i].querySelector("[data-attr-error]"); }
      }
      var m = /^customAttributes\[(\d+)\]/.exec(source);
      if (m && wraps[Number(m[1])]) { return wraps[Number(m[1])].querySelector("[data-attr-error]"); }
      return null;
    };
  }

  /* "image" (a golden image, or none) or "installer": the checked Deploy choice. */
  function deployMode(form) {
    var checked = form.querySelector("[data-deploy-mode]:checked");
    return checked ? checked.value : "image";
  }

  function showDeployMode(form) {
    var installer = deployMode(form) === "installer";
    form.querySelector("[data-installer]").hidden = !installer;
    form.querySelector("[data-golden-image]").hidden = installer;
  }

  /* The installer fieldset as the API's installer object (blank os / version: null). */
  function installerBody(form) {
    function optional(name) {
      var text = value(form, "installer." + name).trim();
      return text === "" ? null : text;
    }
    return {kind: value(form, "installer.kind"), os: optional("os"), version: optional("version"),
            arch: value(form, "installer.arch"), media: value(form, "installer.media").trim(),
            kernelArgs: value(form, "installer.kernelArgs").trim()};
  }

  function initDeploymentPlan(form) {
    var plan = parseObject(form.getAttribute("data-plan"));
    var select = field(form, "oeBuildPlanURI");
    var loading = 0;
    function regenerate() {
      var uri = select.value;
      loading += 1;
      var mine = loading;
      clearErrors(form);
      if (!uri) {
        renderFields(form, [], "Choose a build plan to fill in its attributes.");
        return;
      }
      if (uri === plan.oeBuildPlanURI) {
        renderFields(form, plan.customAttributes || [], "The build plan declares no custom attributes.");
        return;
      }
      var box = form.querySelector("[data-attribute-fields]");
      box.setAttribute("aria-busy", "true");
      call("GET", uri).then(function (buildPlan) {
        if (mine !== loading) { return; }
        box.removeAttribute("aria-busy");
        renderFields(form, buildPlan.customAttributes || [], "The build plan declares no custom attributes.");
      }, function (err) {
        if (mine !== loading) { return; }
        box.removeAttribute("aria-busy");
        renderFields(form, [], "");
        showErrors(form, err, function () { return null; });
      });
    }
    select.addEventListener("change", regenerate);
    regenerate();
    all(form, "[data-deploy-mode]").forEach(function (radio) {
      radio.addEventListener("change", function () { showDeployMode(form); });
    });
    showDeployMode(form);

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var attributes = all(form, "[data-attr]").map(function (wrap) {
        return {name: wrap.getAttribute("data-attr"), value: fieldValue(wrap),
                visible: wrap.querySelector("[data-flag-visible]").checked,
                editable: wrap.querySelector("[data-flag-editable]").checked};
      });
      var installer = deployMode(form) === "installer";
      save(form, "/rest/deployment-plans", "/ui/plans/deployment-plans", {
        name: value(form, "name").trim(), description: value(form, "description"),
        oeBuildPlanURI: select.value, goldenImageURI: installer ? "" : value(form, "goldenImageURI"),
        installer: installer ? installerBody(form) : null,
        customAttributes: attributes
      }, deploymentLocator(form));
    });
    wireDelete(form, "/rest/deployment-plans", "deployment plan");
  }

  /* The deployment plan's attribute form, for other pages (profiles.js: the profile wizard):
   * render(form, attributes, emptyText, options) generates the fields, values(form) reads them as
   * [{name, value}] (value null: left blank; "********": keep a set password), locate(form) finds
   * the field a nested error names, showErrors / clearErrors show an API error at the fields and in
   * the form's [data-plan-errors] box, call(method, path, body, etag) is the REST call they expect. */
  I.attributeForm = {
    render: renderFields,
    values: function (form) {
      return all(form, "[data-attr]").map(function (wrap) {
        return {name: wrap.getAttribute("data-attr"), value: fieldValue(wrap)};
      });
    },
    locate: deploymentLocator,
    showErrors: showErrors,
    clearErrors: clearErrors,
    call: call,
    MASK: MASK
  };

  /* --- artifact bundles ------------------------------------------------------------------ */
  function uploadBundle(form) {
    var file = form.querySelector("[data-bundle-file]").files[0];
    if (!file) { I.showError("Choose a bundle zip first."); return; }
    var button = form.querySelector("[data-bundle-upload-button]");
    var box = form.querySelector("[data-bundle-upload-progress]");
    var bar = form.querySelector("[data-bundle-upload-bar]");
    var text = form.querySelector("[data-bundle-upload-text]");
    I.busy(button, true);
    box.hidden = false;
    I.upload("/rest/artifact-bundles", file, function (sent, total) {
      bar.value = Math.floor(sent * 100 / total);
      text.textContent = "Sending " + bar.value + "%";
    }).then(function () {
      window.location.reload();  // the check task is listed below
    }, function (err) {
      I.busy(button, false);
      box.hidden = true;
      I.showError(err.message);
    });
  }

  function bundleRequest(button, method, path, body) {
    I.busy(button, true);
    I.api(method, path, body).then(function () {
      window.location.reload();  // a task is listed with its progress bar, or the row is gone
    }, function (err) { I.busy(button, false); I.showError(err.message); });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form || !form.matches) { return; }
    if (form.matches("[data-bundle-upload]")) {
      event.preventDefault();
      uploadBundle(form);
    } else if (form.matches("[data-bundle-create]")) {
      event.preventDefault();
      var body = {name: form.querySelector("[data-bundle-name]").value.trim(), deploymentPlans: [], buildPlans: []};
      Array.prototype.forEach.call(form.querySelector("[data-bundle-plans]").selectedOptions, function (option) {
        body[option.getAttribute("data-kind")].push({resourceUri: option.value});
      });
      bundleRequest(form.querySelector("[data-bundle-create-button]"), "POST", "/rest/artifact-bundles", body);
    }
  });

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) { return; }
    var extract = target.closest("[data-extract-bundle]");
    if (extract) {
      var force = extract.getAttribute("data-force") === "true";
      bundleRequest(extract, "PUT", "/rest/artifact-bundles/" + encodeURIComponent(extract.getAttribute("data-extract-bundle")) +
                    "?extract=true&forceImport=" + force);
      return;
    }
    var remove = target.closest("[data-delete-bundle]");
    if (remove && window.confirm("Delete the artifact bundle " + remove.getAttribute("data-name") +
                                 "? What it was extracted into stays.")) {
      bundleRequest(remove, "DELETE", "/rest/artifact-bundles/" + encodeURIComponent(remove.getAttribute("data-delete-bundle")));
    }
  });

  function start() {
    var form = document.querySelector("[data-plan-script-form]");
    if (form) { initScript(form); }
    form = document.querySelector("[data-build-plan-form]");
    if (form) { initBuildPlan(form); }
    form = document.querySelector("[data-deployment-plan-form]");
    if (form) { initDeploymentPlan(form); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
