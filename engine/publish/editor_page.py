"""The editor's loop in the page: its style and its script (vanilla JavaScript, no CDN).

The script reads the JSON that publish/editor.py embeds (#editor-data), draws each output's
region and the crops file's entries on the master's thumbnail (an SVG in master pixels, so no
coordinate ever depends on the thumbnail's size), turns a click into a focal point and a drag
into a box of the tool's aspect ratio, and writes the whole crops file as TOML on "Save crops".
"""

STYLE = """
#crops-bar{margin-top:6px;font-size:13px}#crops-bar button{font-weight:600}
#crops-bar pre{max-height:240px;overflow:auto;background:#f4f4f4;padding:6px}
.editor{display:flex;flex-wrap:wrap;align-items:flex-start;gap:14px;margin:0 0 10px}.editor .note{color:#8a5a00}
.stage{position:relative;max-width:100%;flex:none}.stage img{display:block;width:100%;height:auto}
.stage svg{position:absolute;left:0;top:0;width:100%;height:100%;cursor:crosshair;
touch-action:none;user-select:none}.tools{font-size:12px;max-width:420px}
.tools select{max-width:400px}.tools ul{padding-left:16px;margin:4px 0}
.tools ul.outputs{list-style:none;padding:0}.tools ul.outputs i{display:inline-block;width:10px;
height:10px;margin-right:4px;vertical-align:middle}.tools ul.outputs li:hover{background:#eef}
.legend span{display:inline-block;margin-right:8px}.legend i{display:inline-block;width:10px;
height:10px;margin-right:3px;vertical-align:middle}
"""

SCRIPT = r"""
(function(){
  const doc=JSON.parse(document.getElementById('editor-data').textContent);
  const NS='http://www.w3.org/2000/svg';
  const COLOURS={centre:'#607d8b',attention:'#ef6c00',focus:'#1565c0',editor:'#2e7d32'};
  const colour=c=>COLOURS[c]||(c?'#8e24aa':'#9e9e9e');
  // The sidecar, in its order: [[master id, [[key, value], ...]], ...]; edits change it here.
  const tables=doc.sidecar.map(([id,pairs])=>[id,Array.isArray(pairs)?pairs.map(p=>p.slice()):pairs]);
  let changes=0;
  function entry(id,create){
    let t=tables.find(t=>t[0]===id);
    if(!t&&create){t=[id,[]];tables.push(t);}
    return t&&Array.isArray(t[1])?t[1]:null;
  }
  function get(id,key){const e=entry(id,false);const p=e&&e.find(p=>p[0]===key);return p?p[1]:null;}
  function put(id,key,value){
    const e=entry(id,true);if(!e){return;}
    const i=e.findIndex(p=>p[0]===key);
    if(value===null){if(i>=0){e.splice(i,1);}}else if(i>=0){e[i][1]=value;}else{e.push([key,value]);}
    changes++;document.getElementById('crops-changes').textContent=String(changes);preview();
  }
  function tomlValue(v){
    if(Array.isArray(v)){return '['+v.map(tomlValue).join(', ')+']';}
    if(typeof v==='number'){return Number.isInteger(v)?String(v):String(v);}
    if(typeof v==='boolean'){return String(v);}
    if(v&&typeof v==='object'){return '{'+Object.entries(v).map(([k,x])=>JSON.stringify(k)+' = '+tomlValue(x)).join(', ')+'}';}
    return JSON.stringify(String(v));
  }
  function focusValue(v){return v.map(x=>{const s=String(Math.round(x*10000)/10000);return s.indexOf('.')<0?s+'.0':s;}).join(', ');}
  function toml(){
    const lines=['# fanout crops file: focal points (fractions 0..1) and crop boxes [x, y, w, h]',
                 '# in pixels of the upright master, one table per master id (README, the catalog).'];
    tables.forEach(([id,pairs])=>{
      if(Array.isArray(pairs)&&pairs.length===0){return;}
      lines.push('','['+JSON.stringify(id)+']');
      if(!Array.isArray(pairs)){lines.push('# not a table in the file read: '+JSON.stringify(String(pairs)));return;}
      pairs.forEach(([k,v])=>lines.push(JSON.stringify(k)+' = '+(k==='focus'&&Array.isArray(v)&&v.length===2&&v.every(x=>typeof x==='number')?'['+focusValue(v)+']':tomlValue(v))));
    });
    return lines.join('\n')+'\n';
  }
  function preview(){document.getElementById('crops-preview').textContent=toml();}
  document.getElementById('save-crops').addEventListener('click',function(){
    const blob=new Blob([toml()],{type:'application/toml'});
    const a=document.createElement('a');a.href=URL.createObjectURL(blob);a.download=doc.file_name;
    document.body.appendChild(a);a.click();a.remove();
    setTimeout(()=>URL.revokeObjectURL(a.href),60000);
  });
  function el(tag,attrs,parent){const e=document.createElementNS(NS,tag);
    Object.entries(attrs).forEach(([k,v])=>e.setAttribute(k,String(v)));if(parent){parent.appendChild(e);}return e;}
  function isBox(v){return Array.isArray(v)&&v.length===4&&v.every(Number.isInteger);}

  doc.masters.forEach(function(m){
    const root=document.querySelector('.editor[data-master="'+CSS.escape(m.id)+'"]');
    const svg=root&&root.querySelector('svg');
    if(!svg||!m.w||!m.h){return;}
    const tools=root.querySelector('.tools');
    const font=Math.max(m.w,m.h)/34;
    const outputs=m.targets.filter(t=>t.boxable);
    const select=document.createElement('select');select.className='tool';
    const options=[['focus','Focal point (click)']];
    m.aspects.forEach(a=>options.push(['aspect:'+a.key,'Box '+a.key+' (drag): '+(a.members.join(', ')||'no output')]));
    outputs.forEach(t=>options.push(['output:'+t.key,'Box for '+t.key+' only (drag)']));
    options.forEach(([v,label])=>{const o=document.createElement('option');o.value=v;o.textContent=label;select.appendChild(o);});
    const clear=document.createElement('button');clear.type='button';clear.className='clear';clear.textContent='Clear';
    const label=document.createElement('label');label.textContent='Tool ';label.appendChild(select);
    const state=document.createElement('ul');state.className='state';
    const legend=document.createElement('div');legend.className='legend';
    legend.innerHTML=Object.entries(COLOURS).map(([k,c])=>'<span><i style="background:'+c+'"></i>'+k+'</span>').join('')
      +'<span><i style="background:#8e24aa"></i>gravity</span>';
    const fills=m.targets.filter(t=>t.fill).length;
    const hint=document.createElement('p');
    hint.textContent=(m.changed?'The master is not the size the last render saw: it changed since, and the regions drawn may be off. ':'')+(fills?'Dashed: the region each output shows now (manifest). Solid: the crops file.'
      +(m.kind==='video'?' Video outputs take the focal point only.':'')
      :'No output of this master crops (no fill output): a focal point or box changes nothing.');
    // Every output with the region it shows; pointing at one draws its label on the master.
    const list=document.createElement('ul');list.className='outputs';let pointed=null;
    m.targets.forEach(function(t){
      const li=document.createElement('li');li.dataset.output=t.key;
      li.innerHTML='<i style="background:'+colour(t.crop_by)+'"></i>';
      li.append(t.key+' '+(t.aspect||'')+' · '+(t.crop_by||(t.region?'whole':'no region'))
        +(t.region?' · ['+t.region.join(', ')+']':'')+(t.status==='failed'?' · failed':''));
      li.addEventListener('mouseenter',()=>{pointed=t.key;draw();});
      li.addEventListener('mouseleave',()=>{pointed=null;draw();});
      list.appendChild(li);
    });
    const outputsBox=document.createElement('details');outputsBox.open=m.targets.length<=8;
    const summary=document.createElement('summary');summary.textContent=m.targets.length+' outputs';
    outputsBox.append(summary,list);
    tools.append(label,' ',clear,legend,hint,state,outputsBox);

    function keyOf(){const v=select.value;return v==='focus'?'focus':v.slice(v.indexOf(':')+1);}
    function ratioOf(){
      const v=select.value;
      if(v.startsWith('aspect:')){return m.aspects.find(a=>'aspect:'+a.key===v).ratio;}
      if(v.startsWith('output:')){const t=outputs.find(t=>'output:'+t.key===v);return t.w/t.h;}
      return null;
    }
    clear.addEventListener('click',function(){if(get(m.id,keyOf())!==null){put(m.id,keyOf(),null);draw();}});
    select.addEventListener('change',()=>draw());

    function draw(preview){
      while(svg.firstChild){svg.removeChild(svg.firstChild);}
      const chosen=select.value;let line=0;
      const drawn=m.targets.filter(t=>t.region&&!(t.region[0]===0&&t.region[1]===0&&t.region[2]===m.w&&t.region[3]===m.h));
      drawn.forEach(function(t){
        const r=t.region;
        const hot=(chosen.startsWith('aspect:')&&m.aspects.some(a=>'aspect:'+a.key===chosen&&a.members.includes(t.key)))||chosen==='output:'+t.key||pointed===t.key;
        const g=el('g',{'class':'region','data-output':t.key},svg);
        el('rect',{x:r[0],y:r[1],width:r[2],height:r[3],fill:'none',stroke:colour(t.crop_by),
          'stroke-width':hot?3:1.5,'stroke-dasharray':'6 4','vector-effect':'non-scaling-stroke'},g);
        if(!hot&&drawn.length>3){return;}  // labels of many regions would cover the master
        line++;  // one line per label: regions often share an edge
        const text=el('text',{x:r[0]+font*0.2,y:r[1]+font*line,'font-size':font,fill:colour(t.crop_by),
          'paint-order':'stroke',stroke:'#fff','stroke-width':font/6},g);
        text.textContent=t.key+' '+(t.aspect||'')+' · '+(t.crop_by||'');
      });
      const e=entry(m.id,false)||[];
      e.forEach(function([k,v]){
        if(k==='focus'||!isBox(v)){return;}
        const g=el('g',{'class':'box','data-key':k},svg);
        el('rect',{x:v[0],y:v[1],width:v[2],height:v[3],fill:'rgba(46,125,50,0.12)',stroke:'#2e7d32',
          'stroke-width':keyOf()===k?3.5:2,'vector-effect':'non-scaling-stroke'},g);
        const text=el('text',{x:v[0]+font*0.2,y:v[1]+v[3]-font*0.3,'font-size':font,fill:'#1b5e20',
          'paint-order':'stroke',stroke:'#fff','stroke-width':font/6},g);
        text.textContent=k;
      });
      const f=get(m.id,'focus');
      const point=Array.isArray(f)&&f.length===2?f:m.column_focus;
      if(point){
        const cx=point[0]*m.w,cy=point[1]*m.h,rad=font*0.6;
        const g=el('g',{'class':'focus'+(point===m.column_focus?' from-columns':'')},svg);
        el('circle',{cx:cx,cy:cy,r:rad,fill:point===m.column_focus?'none':'rgba(216,27,96,0.35)',stroke:'#d81b60','stroke-width':2,'vector-effect':'non-scaling-stroke'},g);
        el('path',{d:'M'+(cx-rad*1.8)+' '+cy+'H'+(cx+rad*1.8)+'M'+cx+' '+(cy-rad*1.8)+'V'+(cy+rad*1.8),stroke:'#d81b60','stroke-width':1.5,'vector-effect':'non-scaling-stroke'},g);
      }
      if(preview){el('rect',{'class':'drag',x:preview[0],y:preview[1],width:preview[2],height:preview[3],fill:'none',stroke:'#000','stroke-width':1.5,'stroke-dasharray':'3 3','vector-effect':'non-scaling-stroke'},svg);}
      state.innerHTML='';
      e.forEach(function([k,v]){const li=document.createElement('li');li.textContent=k+' = '+JSON.stringify(v);state.appendChild(li);});
      if(!e.length){const li=document.createElement('li');li.textContent=m.column_focus?'focus from the catalog columns: '+JSON.stringify(m.column_focus):'nothing in the crops file';state.appendChild(li);}
    }

    function at(ev){
      const r=svg.getBoundingClientRect();
      return [Math.min(Math.max((ev.clientX-r.left)/r.width*m.w,0),m.w),
              Math.min(Math.max((ev.clientY-r.top)/r.height*m.h,0),m.h)];
    }
    // A box from the drag's anchor towards the pointer, of the tool's aspect ratio, covering
    // the drag, inside the master, in whole pixels.
    function boxFrom(a,b,ratio){
      const sx=b[0]>=a[0]?1:-1,sy=b[1]>=a[1]?1:-1;
      let w=Math.max(Math.abs(b[0]-a[0]),Math.abs(b[1]-a[1])*ratio);
      w=Math.min(w,sx>0?m.w-a[0]:a[0],(sy>0?m.h-a[1]:a[1])*ratio);
      let iw=Math.max(1,Math.round(w)),ih=Math.max(1,Math.round(iw/ratio));
      if(ih>m.h){ih=m.h;iw=Math.max(1,Math.round(ih*ratio));}
      if(iw>m.w){iw=m.w;ih=Math.max(1,Math.round(iw/ratio));}
      let x=Math.round(sx>0?a[0]:a[0]-iw),y=Math.round(sy>0?a[1]:a[1]-ih);
      x=Math.min(Math.max(x,0),m.w-iw);y=Math.min(Math.max(y,0),m.h-ih);
      return [x,y,iw,ih];
    }
    let anchor=null;
    svg.addEventListener('pointerdown',function(ev){anchor=at(ev);svg.setPointerCapture(ev.pointerId);ev.preventDefault();});
    svg.addEventListener('pointermove',function(ev){
      const ratio=ratioOf();
      if(anchor&&ratio){draw(boxFrom(anchor,at(ev),ratio));}
    });
    svg.addEventListener('pointerup',function(ev){
      if(!anchor){return;}
      const a=anchor,b=at(ev),ratio=ratioOf();anchor=null;
      const r=svg.getBoundingClientRect(),moved=Math.hypot((b[0]-a[0])/m.w*r.width,(b[1]-a[1])/m.h*r.height);
      if(select.value==='focus'){
        if(moved<4){put(m.id,'focus',[Math.round(b[0]/m.w*10000)/10000,Math.round(b[1]/m.h*10000)/10000]);}
      }else if(ratio&&moved>=4){put(m.id,keyOf(),boxFrom(a,b,ratio));}
      draw();
    });
    draw();
  });
  preview();
})();
"""
